//! `write_buffer`: the transaction write buffer (`tikv_core::txn::WriteBuffer`) against a
//! plain `BTreeMap<Vec<u8>, Vec<u8>>`, with 1 M random 16-byte keys (issue #16's mem-buffer
//! benchmark; client-go's ART mem-buffer does about 127 ns/op insert on its machines, the
//! goal here is ≤ 150 ns/op).
//!
//! Usage: `cargo run --release --bin write_buffer -- [KEYS] [ROUNDS]` (1 000 000 and 3 by
//! default). Prints ns/op for insert, get (hits), ordered iteration, and a staged insert
//! round that is then cleaned up; the best of the rounds.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use tikv_core::Key;
use tikv_core::txn::{Mutation, WriteBuffer};

/// SplitMix64: seeded, fast; the keys need to be reproducible, not good randomness.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn keys(n: usize) -> Vec<Vec<u8>> {
    let mut rng = SplitMix64(42);
    (0..n)
        .map(|_| {
            let mut k = rng.next().to_be_bytes().to_vec();
            k.extend_from_slice(&rng.next().to_be_bytes());
            k
        })
        .collect()
}

/// Nanoseconds per item of `f` over `n` items, best of `rounds`.
fn best(rounds: usize, n: usize, mut f: impl FnMut()) -> f64 {
    (0..rounds)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_nanos() as f64 / n as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let raw = keys(n);
    let ours: Vec<Key> = raw.iter().map(|k| Key::from(k.clone())).collect();
    let value = bytes_value();

    let insert_ours = best(rounds, n, || {
        let mut b = WriteBuffer::new();
        for k in &ours {
            b.set(k.clone(), Mutation::Put(value.clone()));
        }
        black_box(b.len());
    });
    let insert_map = best(rounds, n, || {
        let mut m = BTreeMap::new();
        for k in &raw {
            m.insert(k.clone(), b"value".to_vec());
        }
        black_box(m.len());
    });

    let mut b = WriteBuffer::new();
    for k in &ours {
        b.set(k.clone(), Mutation::Put(value.clone()));
    }
    let mut m = BTreeMap::new();
    for k in &raw {
        m.insert(k.clone(), b"value".to_vec());
    }
    let get_ours = best(rounds, n, || {
        for k in &ours {
            black_box(b.get(k));
        }
    });
    let get_map = best(rounds, n, || {
        for k in &raw {
            black_box(m.get(k));
        }
    });
    let iter_ours = best(rounds, n, || {
        for e in b.iter() {
            black_box(e);
        }
    });
    let iter_map = best(rounds, n, || {
        // Walk every entry (as the buffer's walk does), not just `len()`.
        for e in m.iter() {
            black_box(e);
        }
    });
    // A statement's worth of overwrites in a stage, then undone.
    let staged = best(rounds, n, || {
        let s = b.staging();
        for k in &ours {
            b.set(k.clone(), Mutation::Delete);
        }
        b.cleanup(s).expect("the only stage");
    });

    println!("{n} random 16-byte keys, best of {rounds} rounds, ns/op");
    println!("| operation | WriteBuffer | BTreeMap<Vec<u8>, Vec<u8>> |");
    println!("|---|---:|---:|");
    println!("| insert | {insert_ours:.0} | {insert_map:.0} |");
    println!("| get (hit) | {get_ours:.0} | {get_map:.0} |");
    println!("| iterate in order | {iter_ours:.1} | {iter_map:.1} |");
    println!("| overwrite in a stage, then cleanup | {staged:.0} | — |");
}

fn bytes_value() -> tikv_tokio::Bytes {
    tikv_tokio::Bytes::from_static(b"value")
}

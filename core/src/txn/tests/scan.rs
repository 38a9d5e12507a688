//! `SnapshotScan`: a range read region by region at a start timestamp, resolving locks and
//! resuming at the locked key.

use bytes::Bytes;

use super::*;
use crate::error::Error;
use crate::key::{Key, KeyRange};
use crate::keyspace::KeyspaceCodec;
use crate::machine::Machine;
use crate::raw::{ABOVE_ALL_KEYS, KvPair};
use crate::testing::resp::{keys, lock, ts};
use crate::timestamp::Timestamp;
use crate::txn::scan::SnapshotScan;

const START: Timestamp = Timestamp::compose(5000, 0);

fn scan(
    range: KeyRange,
    limit: u32,
    key_only: bool,
    reverse: bool,
) -> impl Machine<Output = Result<Vec<KvPair>, Error>> {
    SnapshotScan::new(KeyspaceCodec::NONE, START, range, limit, key_only, reverse)
}

fn found(out: Result<Vec<KvPair>, Error>) -> Vec<(String, String)> {
    out.unwrap()
        .into_iter()
        .map(|p| {
            (
                String::from_utf8(p.key.to_bytes().to_vec()).unwrap(),
                String::from_utf8(p.value.to_vec()).unwrap(),
            )
        })
        .collect()
}

fn owned(spec: &[(&str, &str)]) -> Vec<(String, String)> {
    spec.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// (region, start_key, end_key, limit) of every scan request, all at the start timestamp.
fn scans(h: &Harness) -> Vec<(u64, Key, Key, u32)> {
    scans_of(&resp::sent(&h.effects))
}

#[test]
fn scan_forward_reads_regions_in_order_with_the_remaining_limit() {
    let mut h = harness();
    let out = h.run(
        scan(KeyRange::new("a", "z"), 10, false, false),
        cluster([], |s| match s.region {
            1 => resp::scan().pairs(&[("a", "1"), ("b", "2")]).ok(),
            _ => resp::scan().pairs(&[("n", "3"), ("x", "4")]).ok(),
        }),
    );
    assert_eq!(
        found(out),
        owned(&[("a", "1"), ("b", "2"), ("n", "3"), ("x", "4")])
    );
    assert_eq!(
        scans(&h),
        [
            (1, "a".into(), "m".into(), 10),
            (2, "m".into(), "z".into(), 8)
        ]
    );
}

#[test]
fn scan_that_fills_its_limit_stops_before_the_next_region() {
    let mut h = harness();
    let out = h.run(
        scan(KeyRange::new("a", "z"), 2, false, false),
        cluster([], |_| resp::scan().pairs(&[("a", "1"), ("b", "2")]).ok()),
    );
    assert_eq!(found(out), owned(&[("a", "1"), ("b", "2")]));
    assert_eq!(scans(&h).len(), 1);
}

#[test]
fn scan_reverse_starts_at_the_end_and_walks_down() {
    let mut h = harness();
    let out = h.run(
        scan(KeyRange::new("a", ""), 10, false, true),
        cluster([], |s| match s.region {
            2 => resp::scan().pairs(&[("x", "4"), ("n", "3")]).ok(),
            _ => resp::scan().pairs(&[("b", "2"), ("a", "1")]).ok(),
        }),
    );
    assert_eq!(
        found(out),
        owned(&[("x", "4"), ("n", "3"), ("b", "2"), ("a", "1")])
    );
    assert_eq!(
        scans(&h),
        [
            (2, Key::from(ABOVE_ALL_KEYS), "m".into(), 10),
            (1, "m".into(), "a".into(), 8)
        ],
        "a reverse scan's start key is its exclusive upper bound"
    );
    assert!(
        resp::sent(&h.effects)
            .iter()
            .all(|s| req!(s, KvScan).reverse)
    );
}

#[test]
fn scan_meeting_a_lock_resolves_it_and_resumes_at_the_locked_key() {
    let mut h = harness();
    let mut first = true;
    let out = h.run(
        scan(KeyRange::new("a", "z"), 10, false, false),
        cluster([resp::tso(ts(6000))], |s| match (s.method, s.region) {
            ("KvScan", 1) if std::mem::take(&mut first) => resp::scan()
                .pair("a", "1")
                .locked_pair(lock("c", "p", ts(1000)))
                .ok(),
            ("KvScan", 1) => {
                let ctx = req!(s, KvScan).context.clone().unwrap_or_default();
                assert_eq!(
                    ctx.committed_locks,
                    [ts(1000).as_u64()],
                    "the resumed scan may read through the committed owner's locks"
                );
                resp::scan().pairs(&[("c", "3"), ("d", "4")]).ok()
            }
            ("KvScan", _) => resp::scan().pair("n", "5").ok(),
            ("KvCheckTxnStatus", _) => resp::check_txn_status().committed(ts(1500)),
            ("KvResolveLock", _) => resp::resolve_lock().ok(),
            other => panic!("unexpected {other:?}"),
        }),
    );
    assert_eq!(
        found(out),
        owned(&[("a", "1"), ("c", "3"), ("d", "4"), ("n", "5")]),
        "in order, nothing lost or repeated"
    );
    assert_eq!(
        resp::kinds(&h.effects),
        [
            "KvScan",
            "Tso",
            "KvCheckTxnStatus",
            "Spawn",
            "KvScan",
            "KvScan",
            "KvResolveLock"
        ],
        "the scan resumes at once; the lock is cleaned up in the background"
    );
    let sent = resp::sent(&h.effects);
    assert_eq!(
        sent[4].keys,
        keys(&["c"]),
        "the lock is resolved on its key"
    );
    assert_eq!(
        scans_of(&sent[2..4]),
        [
            (1, "c".into(), "m".into(), 9),
            (2, "m".into(), "z".into(), 7)
        ],
        "resumes at the locked key with what is left of the limit"
    );
}

#[test]
fn scan_reverse_meeting_a_lock_resumes_just_above_the_locked_key() {
    let mut h = harness();
    let mut first = true;
    let out = h.run(
        scan(KeyRange::new("a", "z"), 10, false, true),
        cluster([resp::tso(ts(6000))], |s| match (s.method, s.region) {
            ("KvScan", 2) if std::mem::take(&mut first) => resp::scan()
                .pair("x", "4")
                .locked_pair(lock("p", "p", ts(1000)))
                .ok(),
            ("KvScan", 2) => resp::scan().pairs(&[("p", "3"), ("n", "2")]).ok(),
            ("KvScan", _) => resp::scan().pair("b", "1").ok(),
            ("KvCheckTxnStatus", _) => resp::check_txn_status().rolled_back(),
            ("KvResolveLock", _) => resp::resolve_lock().ok(),
            other => panic!("unexpected {other:?}"),
        }),
    );
    assert_eq!(
        found(out),
        owned(&[("x", "4"), ("p", "3"), ("n", "2"), ("b", "1")])
    );
    let sent = resp::sent(&h.effects);
    let scans: Vec<_> = sent.iter().filter(|s| s.method == "KvScan").collect();
    let resumed = req!(scans[1], KvScan);
    assert_eq!(
        (
            Key::from(resumed.start_key.clone()),
            Key::from(resumed.end_key.clone())
        ),
        (Key::from("p").next_key(), Key::from("m")),
        "the locked key itself is read again"
    );
}

#[test]
fn scan_meeting_a_live_lock_sleeps_then_resumes() {
    let mut h = harness();
    let mut first = true;
    let out = h.run(
        scan(KeyRange::new("a", "m"), 10, false, false),
        cluster([resp::tso(ts(2000))], |s| match s.method {
            "KvScan" if std::mem::take(&mut first) => {
                resp::scan().locked_pair(lock("a", "a", ts(1000))).ok()
            }
            "KvScan" => resp::scan().pair("a", "1").ok(),
            "KvCheckTxnStatus" => resp::check_txn_status().alive(1004),
            other => panic!("unexpected {other}"),
        }),
    );
    assert_eq!(found(out), owned(&[("a", "1")]));
    assert_eq!(
        resp::kinds(&h.effects),
        ["KvScan", "Tso", "KvCheckTxnStatus", "Sleep", "KvScan"]
    );
    assert_eq!(h.slept(), std::time::Duration::from_millis(4));
}

#[test]
fn scan_key_only_asks_for_keys_and_returns_no_values() {
    let mut h = harness();
    let out = h.run(
        scan(KeyRange::new("a", "m"), 10, true, false),
        cluster([], |s| {
            assert!(req!(s, KvScan).key_only);
            resp::scan().pair("a", "ignored").ok()
        }),
    );
    let out = out.unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].value, Bytes::new());
}

#[test]
fn scan_key_error_fails_the_scan() {
    let mut h = harness();
    let out = h.run(
        scan(KeyRange::new("a", "z"), 10, false, false),
        cluster([], |_| resp::scan().key_error(resp::abort("bad"))),
    );
    assert!(
        matches!(out, Err(Error::KeyError { ref message, .. }) if message == "bad"),
        "{out:?}"
    );
    assert_eq!(resp::kinds(&h.effects), ["KvScan"]);
}

fn scans_of(sent: &[resp::Sent]) -> Vec<(u64, Key, Key, u32)> {
    sent.iter()
        .map(|s| {
            let r = req!(s, KvScan);
            assert_eq!(r.version, START.as_u64());
            (
                s.region,
                Key::from(r.start_key.clone()),
                Key::from(r.end_key.clone()),
                r.limit,
            )
        })
        .collect()
}

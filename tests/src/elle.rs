//! An Elle-style checker for list-append histories (after Kingsbury & Alvaro, "Elle:
//! inferring isolation anomalies from experimental observations").
//!
//! Transactions append unique elements to lists (one list per key) and read whole lists.
//! Because every element is unique and lists only grow, a read names exactly which appends it
//! saw, and the longest read of a key gives that key's version order. From that the checker
//! infers the dependencies between transactions:
//!
//! - **ww**: the appender of a list's element precedes the appender of the next element;
//! - **wr**: the appender of a read's last element precedes the reader;
//! - **rw**: a reader precedes the appender of the element just after what it read.
//!
//! and reports what snapshot isolation forbids: **G0** (a cycle of ww edges), **G1a** (a
//! committed read of an aborted transaction's element), **G1c** (a cycle of ww and wr
//! edges), **G-single** (a cycle with exactly one rw edge: read skew, lost update), plus
//! reads that no single order explains (**incompatible order**) or that contain elements
//! twice or never appended. Cycles with two or more rw edges (write skew) are allowed.
//!
//! Outcomes as Elle treats them: a transaction whose commit is unknown counts as committed if
//! any of its elements was read, and is otherwise left out.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// A list's key.
pub type Key = u32;
/// An appended element (unique in the history).
pub type Element = u64;

/// One operation of a transaction, with what it observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Appended `element` to `key`'s list.
    Append(Key, Element),
    /// Read `key`'s list (as the transaction saw it, its own appends included).
    Read(Key, Vec<Element>),
}

/// How a transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The commit was acknowledged.
    Committed,
    /// The transaction certainly did not commit.
    Aborted,
    /// The commit's fate is unknown (a lost reply).
    Unknown,
}

/// One transaction of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Txn {
    /// Its operations, in order.
    pub ops: Vec<Op>,
    /// Its outcome.
    pub outcome: Outcome,
}

/// A dependency's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dep {
    /// Write-write.
    Ww,
    /// Write-read.
    Wr,
    /// Read-write (anti-dependency).
    Rw,
}

/// What the checker found. Transactions are named by their index in the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Anomaly {
    /// Two reads of `key` that no single order explains.
    IncompatibleOrder {
        /// The key.
        key: Key,
        /// One read.
        a: Vec<Element>,
        /// The other.
        b: Vec<Element>,
    },
    /// A read that contains an element twice, or one nobody appended to that key.
    GarbageRead {
        /// The reader.
        txn: usize,
        /// The key.
        key: Key,
        /// What it read.
        read: Vec<Element>,
    },
    /// A committed transaction read an element of an aborted one.
    G1a {
        /// The reader.
        reader: usize,
        /// The aborted appender.
        writer: usize,
        /// The key.
        key: Key,
    },
    /// A cycle of write-write dependencies.
    G0(Vec<(usize, Dep)>),
    /// A cycle of write-write and write-read dependencies.
    G1c(Vec<(usize, Dep)>),
    /// A cycle with exactly one read-write dependency.
    GSingle(Vec<(usize, Dep)>),
}

/// The dependency graph: edges by kind.
#[derive(Debug, Default)]
struct Graph {
    edges: BTreeMap<usize, BTreeSet<(usize, Dep)>>,
}

impl Graph {
    fn add(&mut self, from: usize, to: usize, dep: Dep) {
        if from != to {
            self.edges.entry(from).or_default().insert((to, dep));
        }
    }

    /// A path from `from` to `to` over edges of `kinds`, as `(txn, dep into next)` steps.
    fn path(&self, from: usize, to: usize, kinds: &[Dep]) -> Option<Vec<(usize, Dep)>> {
        let mut prev: HashMap<usize, (usize, Dep)> = HashMap::new();
        let mut queue = VecDeque::from([from]);
        let mut seen = BTreeSet::from([from]);
        while let Some(n) = queue.pop_front() {
            for &(m, dep) in self.edges.get(&n).into_iter().flatten() {
                if !kinds.contains(&dep) || !seen.insert(m) {
                    continue;
                }
                prev.insert(m, (n, dep));
                if m == to {
                    let mut path = Vec::new();
                    let mut at = to;
                    while at != from {
                        let (p, d) = prev[&at];
                        path.push((p, d));
                        at = p;
                    }
                    path.reverse();
                    return Some(path);
                }
                queue.push_back(m);
            }
        }
        None
    }

    /// A cycle through edges of `kinds` only, if any.
    fn cycle(&self, kinds: &[Dep]) -> Option<Vec<(usize, Dep)>> {
        for (&from, outs) in &self.edges {
            for &(to, dep) in outs {
                if !kinds.contains(&dep) {
                    continue;
                }
                if let Some(mut back) = self.path(to, from, kinds) {
                    let mut cycle = vec![(from, dep)];
                    cycle.append(&mut back);
                    return Some(cycle);
                }
            }
        }
        None
    }

    /// A cycle with exactly one rw edge, if any.
    fn single_rw_cycle(&self) -> Option<Vec<(usize, Dep)>> {
        for (&from, outs) in &self.edges {
            for &(to, dep) in outs {
                if dep != Dep::Rw {
                    continue;
                }
                if let Some(mut back) = self.path(to, from, &[Dep::Ww, Dep::Wr]) {
                    let mut cycle = vec![(from, Dep::Rw)];
                    cycle.append(&mut back);
                    return Some(cycle);
                }
            }
        }
        None
    }
}

/// Checks `history` (see the module docs); an empty result means no anomaly was found.
pub fn check(history: &[Txn]) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    // Who appended what, where.
    let mut appender: HashMap<Element, (usize, Key)> = HashMap::new();
    for (i, t) in history.iter().enumerate() {
        for op in &t.ops {
            if let Op::Append(k, e) = op {
                appender.insert(*e, (i, *k));
            }
        }
    }
    // Unknown outcomes count as committed once any of their elements was read.
    let mut observed: BTreeSet<usize> = BTreeSet::new();
    for t in history.iter().filter(|t| t.outcome == Outcome::Committed) {
        for op in &t.ops {
            if let Op::Read(_, read) = op {
                observed.extend(read.iter().filter_map(|e| appender.get(e).map(|a| a.0)));
            }
        }
    }
    let counts = |i: usize| match history[i].outcome {
        Outcome::Committed => true,
        Outcome::Unknown => observed.contains(&i),
        Outcome::Aborted => false,
    };
    // Reads of transactions that count as committed, checked and ordered per key.
    let mut reads: Vec<(usize, Key, &Vec<Element>)> = Vec::new();
    for (i, t) in history.iter().enumerate() {
        if !counts(i) {
            continue;
        }
        for op in &t.ops {
            let Op::Read(k, read) = op else { continue };
            let distinct: BTreeSet<_> = read.iter().collect();
            let foreign = read
                .iter()
                .any(|e| appender.get(e).is_none_or(|(_, key)| key != k));
            if distinct.len() != read.len() || foreign {
                anomalies.push(Anomaly::GarbageRead {
                    txn: i,
                    key: *k,
                    read: read.clone(),
                });
                continue;
            }
            for e in read {
                let (w, _) = appender[e];
                if history[w].outcome == Outcome::Aborted {
                    anomalies.push(Anomaly::G1a {
                        reader: i,
                        writer: w,
                        key: *k,
                    });
                }
            }
            reads.push((i, *k, read));
        }
    }
    // The version order of each key: the longest read, which every other must prefix.
    let mut order: BTreeMap<Key, Vec<Element>> = BTreeMap::new();
    for (_, k, read) in &reads {
        let longest = order.entry(*k).or_default();
        if read.len() > longest.len() {
            if !read.starts_with(longest) {
                anomalies.push(Anomaly::IncompatibleOrder {
                    key: *k,
                    a: longest.clone(),
                    b: (*read).clone(),
                });
            }
            *longest = (*read).clone();
        } else if !longest.starts_with(read) {
            anomalies.push(Anomaly::IncompatibleOrder {
                key: *k,
                a: longest.clone(),
                b: (*read).clone(),
            });
        }
    }
    if !anomalies.is_empty() {
        // Without one order per key, the dependencies mean nothing.
        return anomalies;
    }
    let mut graph = Graph::default();
    for list in order.values() {
        for pair in list.windows(2) {
            let (a, b) = (appender[&pair[0]].0, appender[&pair[1]].0);
            if counts(a) && counts(b) {
                graph.add(a, b, Dep::Ww);
            }
        }
    }
    for &(r, k, read) in &reads {
        if let Some(last) = read.last() {
            let w = appender[last].0;
            if counts(w) {
                graph.add(w, r, Dep::Wr);
            }
        }
        let list = &order[&k];
        if let Some(next) = list.get(read.len()) {
            let w = appender[next].0;
            if counts(w) {
                graph.add(r, w, Dep::Rw);
            }
        }
    }
    if let Some(c) = graph.cycle(&[Dep::Ww]) {
        anomalies.push(Anomaly::G0(c));
    } else if let Some(c) = graph.cycle(&[Dep::Ww, Dep::Wr]) {
        anomalies.push(Anomaly::G1c(c));
    } else if let Some(c) = graph.single_rw_cycle() {
        anomalies.push(Anomaly::GSingle(c));
    }
    anomalies
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ops: Vec<Op>) -> Txn {
        Txn {
            ops,
            outcome: Outcome::Committed,
        }
    }

    use Op::{Append as A, Read as R};

    #[test]
    fn a_serial_history_is_clean() {
        let h = [
            t(vec![A(1, 1), A(2, 2)]),
            t(vec![R(1, vec![1]), A(1, 3)]),
            t(vec![R(1, vec![1, 3]), R(2, vec![2])]),
        ];
        assert_eq!(check(&h), []);
    }

    #[test]
    fn write_skew_is_allowed_under_snapshot_isolation() {
        // Each reads the other's key empty and appends to its own: two rw edges.
        let h = [
            t(vec![R(1, vec![]), A(2, 20)]),
            t(vec![R(2, vec![]), A(1, 10)]),
            t(vec![R(1, vec![10]), R(2, vec![20])]),
        ];
        assert_eq!(check(&h), []);
    }

    #[test]
    fn opposite_append_orders_on_two_keys_are_g0() {
        let h = [
            t(vec![A(1, 1), A(2, 1_1)]),
            t(vec![A(1, 2), A(2, 2_2)]),
            t(vec![R(1, vec![1, 2]), R(2, vec![2_2, 1_1])]),
        ];
        assert!(matches!(check(&h)[..], [Anomaly::G0(_)]), "{:?}", check(&h));
    }

    #[test]
    fn reading_each_others_writes_is_g1c() {
        let h = [
            t(vec![A(1, 1), R(2, vec![2])]),
            t(vec![A(2, 2), R(1, vec![1])]),
        ];
        assert!(
            matches!(check(&h)[..], [Anomaly::G1c(_)]),
            "{:?}",
            check(&h)
        );
    }

    #[test]
    fn read_skew_and_lost_updates_are_g_single() {
        // T1 sees T0's append on key 2 but not on key 1.
        let skew = [
            t(vec![A(1, 1), A(2, 2)]),
            t(vec![R(1, vec![]), R(2, vec![2])]),
            t(vec![R(1, vec![1]), R(2, vec![2])]),
        ];
        assert!(
            matches!(check(&skew)[..], [Anomaly::GSingle(_)]),
            "{:?}",
            check(&skew)
        );
        // Both read [] and append: the second overwrote what it never saw.
        let lost = [
            t(vec![R(1, vec![]), A(1, 1)]),
            t(vec![R(1, vec![]), A(1, 2)]),
            t(vec![R(1, vec![1, 2])]),
        ];
        assert!(
            matches!(check(&lost)[..], [Anomaly::GSingle(_)]),
            "{:?}",
            check(&lost)
        );
    }

    #[test]
    fn aborted_reads_and_impossible_orders_are_reported() {
        let h = [
            Txn {
                ops: vec![A(1, 1)],
                outcome: Outcome::Aborted,
            },
            t(vec![R(1, vec![1])]),
        ];
        assert!(matches!(
            check(&h)[..],
            [Anomaly::G1a {
                reader: 1,
                writer: 0,
                key: 1
            }]
        ));
        let h = [
            t(vec![A(1, 1)]),
            t(vec![A(1, 2)]),
            t(vec![R(1, vec![1, 2])]),
            t(vec![R(1, vec![2, 1])]),
        ];
        assert!(matches!(
            check(&h)[..],
            [Anomaly::IncompatibleOrder { key: 1, .. }]
        ));
        let h = [t(vec![R(1, vec![7])])];
        assert!(matches!(check(&h)[..], [Anomaly::GarbageRead { .. }]));
    }

    #[test]
    fn an_unknown_commit_counts_once_it_is_read() {
        let h = [
            Txn {
                ops: vec![A(1, 1), R(2, vec![2])],
                outcome: Outcome::Unknown,
            },
            t(vec![A(2, 2), R(1, vec![1])]),
        ];
        assert!(
            matches!(check(&h)[..], [Anomaly::G1c(_)]),
            "{:?}",
            check(&h)
        );
        let unseen = [
            Txn {
                ops: vec![A(1, 1), R(2, vec![])],
                outcome: Outcome::Unknown,
            },
            t(vec![R(1, vec![]), A(2, 2)]),
        ];
        assert_eq!(check(&unseen), []);
    }
}

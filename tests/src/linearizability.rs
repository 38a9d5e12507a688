//! A linearizability checker for one register with compare-and-swap (Wing & Gong's search
//! with memoization, as in porcupine).
//!
//! A history is a list of operations with invocation and response times. An operation whose
//! outcome is unknown (the client got `Undetermined`, or gave up) may have taken effect at any
//! point after its invocation, or never; it never constrains the order of others.

use std::collections::HashSet;
use std::time::Duration;

/// An operation on the register and what the client observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A read that returned this value.
    Get(Option<u64>),
    /// A compare-and-swap: expected, new, and (if known) whether it swapped and what it saw.
    Cas {
        /// The expected value (`None`: absent).
        expected: Option<u64>,
        /// The value to write.
        new: u64,
        /// `Some((swapped, previous))` when the client knows the outcome.
        observed: Option<(bool, Option<u64>)>,
    },
}

/// One operation in the history.
#[derive(Clone, Debug)]
pub struct Event {
    /// What was done.
    pub op: Op,
    /// When it was invoked.
    pub invoked: Duration,
    /// When it returned; `None` when its outcome is unknown.
    pub returned: Option<Duration>,
}

/// The state after applying `op` to `state`, or `None` if `op`'s observation is impossible
/// from `state`.
fn step(state: Option<u64>, op: &Op) -> Option<Option<u64>> {
    match op {
        Op::Get(seen) => (*seen == state).then_some(state),
        Op::Cas {
            expected,
            new,
            observed,
        } => {
            let swaps = *expected == state;
            match observed {
                Some((swapped, previous)) if *swapped != swaps || *previous != state => None,
                _ => Some(if swaps { Some(*new) } else { state }),
            }
        }
    }
}

/// Whether `history`, starting from `initial`, is linearizable. Histories of up to 64 events.
pub fn check(initial: Option<u64>, history: &[Event]) -> bool {
    assert!(
        history.len() <= 64,
        "the checker handles up to 64 operations"
    );
    let mut memo = HashSet::new();
    search(history, initial, 0, &mut memo)
}

fn search(
    history: &[Event],
    state: Option<u64>,
    done: u64,
    memo: &mut HashSet<(u64, Option<u64>)>,
) -> bool {
    let pending = |i: usize| done & (1 << i) == 0;
    let open_responses = history
        .iter()
        .enumerate()
        .filter(|(i, _)| pending(*i))
        .filter_map(|(_, e)| e.returned);
    let Some(earliest_return) = open_responses.min() else {
        // Every completed operation is placed; unknown ones may simply not have happened.
        return true;
    };
    for (i, e) in history.iter().enumerate() {
        // Only an operation invoked before every remaining response can come next.
        if !pending(i) || e.invoked > earliest_return {
            continue;
        }
        if let Some(next) = step(state, &e.op) {
            let done = done | (1 << i);
            if memo.insert((done, next)) && search(history, next, done, memo) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ev(op: Op, invoked: u64, returned: Option<u64>) -> Event {
        Event {
            op,
            invoked: ms(invoked),
            returned: returned.map(ms),
        }
    }

    fn cas(expected: Option<u64>, new: u64, observed: Option<(bool, Option<u64>)>) -> Op {
        Op::Cas {
            expected,
            new,
            observed,
        }
    }

    #[test]
    fn sequential_and_concurrent_histories() {
        let ok = [
            ev(cas(None, 1, Some((true, None))), 0, Some(10)),
            ev(Op::Get(Some(1)), 11, Some(12)),
            ev(cas(Some(1), 2, Some((true, Some(1)))), 13, Some(20)),
            ev(cas(Some(1), 3, Some((false, Some(2)))), 15, Some(25)),
        ];
        assert!(check(None, &ok));
        // A read of a value no one wrote.
        let bad = [
            ev(cas(None, 1, Some((true, None))), 0, Some(10)),
            ev(Op::Get(Some(7)), 11, Some(12)),
        ];
        assert!(!check(None, &bad));
        // A read after a completed swap sees the old value: stale.
        let stale = [
            ev(cas(None, 1, Some((true, None))), 0, Some(10)),
            ev(Op::Get(None), 11, Some(12)),
        ];
        assert!(!check(None, &stale));
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_happen() {
        let applied = [
            ev(cas(None, 5, None), 0, None),
            ev(Op::Get(Some(5)), 20, Some(21)),
        ];
        assert!(check(None, &applied));
        let not_applied = [
            ev(cas(None, 5, None), 0, None),
            ev(Op::Get(None), 20, Some(21)),
        ];
        assert!(check(None, &not_applied));
        // But not both: once seen, it cannot be unseen.
        let flicker = [
            ev(cas(None, 5, None), 0, None),
            ev(Op::Get(Some(5)), 20, Some(21)),
            ev(Op::Get(None), 22, Some(23)),
        ];
        assert!(!check(None, &flicker));
    }
}

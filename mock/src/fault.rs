//! Fault injection: make the next N requests that match a filter fail in a chosen way.
//!
//! Rules are checked in the order they were added; the first match with attempts left fires
//! and uses up one attempt. Delays are the exception: every matching delay rule fires (and
//! uses up an attempt) on top of whichever other rule fires, so a test can make a request both
//! slow and failed. Nothing here is random, so a test (or a simulation that picks its faults
//! from a seeded generator) replays exactly.
//!
//! The engine never sleeps: a fired delay is only recorded, and the front that served the
//! request collects it with [`Cluster::take_injected_delay`] and waits on its own runtime
//! before answering (the gRPC front in [`crate::server`] does).

use std::time::Duration;

use tikv_proto::errorpb;

use crate::Cluster;

use crate::error::{Code, MockError};

/// Which requests a fault applies to; `None` fields match anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultFilter {
    /// The store the request is sent to (PD requests have no store and only match `None`).
    pub store_id: Option<u64>,
    /// The gRPC method name as the schema spells it, e.g. `RawGet`, `KVPessimisticRollback`,
    /// `GetRegion`, `Tso`.
    pub method: Option<String>,
    /// The region named in the request's `Context`.
    pub region_id: Option<u64>,
}

impl FaultFilter {
    /// Matches every request.
    pub fn any() -> Self {
        FaultFilter::default()
    }

    /// Only requests to this store.
    pub fn store(mut self, store_id: u64) -> Self {
        self.store_id = Some(store_id);
        self
    }

    /// Only this method.
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into());
        self
    }

    /// Only requests for this region.
    pub fn region(mut self, region_id: u64) -> Self {
        self.region_id = Some(region_id);
        self
    }

    fn matches(&self, store_id: Option<u64>, method: &str, region_id: Option<u64>) -> bool {
        (self.store_id.is_none() || self.store_id == store_id)
            && self.method.as_deref().is_none_or(|m| m == method)
            && (self.region_id.is_none() || self.region_id == region_id)
    }
}

/// What a matching request experiences.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum FaultAction {
    /// The response carries this region error and nothing is executed (TiKV methods only; a
    /// PD request matching this rule fails with `Unavailable` instead).
    RegionError(Box<errorpb::Error>),
    /// The request never arrives: the front reports the store as unreachable.
    Unreachable,
    /// The request is executed but its reply is lost.
    ReplyLost,
    /// The call fails with this gRPC status, nothing executed.
    Status(Code, String),
    /// The request is served normally, but the front answers only after this long (for a
    /// `BatchCommands` message, the whole response message waits). Delays of several
    /// matching rules do not add up: the longest one applies.
    Delay(Duration),
}

/// A handle to an installed fault, for removing it early.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FaultId(u64);

#[derive(Clone, Debug)]
struct Rule {
    id: FaultId,
    filter: FaultFilter,
    action: FaultAction,
    remaining: u64,
}

/// The installed fault rules.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    next_id: u64,
    rules: Vec<Rule>,
    /// The longest delay fired since the front last collected it.
    delay: Option<Duration>,
}

impl Faults {
    /// Installs a rule firing for the next `times` matching requests.
    pub fn add(&mut self, filter: FaultFilter, action: FaultAction, times: u64) -> FaultId {
        self.next_id += 1;
        let id = FaultId(self.next_id);
        self.rules.push(Rule {
            id,
            filter,
            action,
            remaining: times,
        });
        id
    }

    /// Removes a rule; returns whether it was still installed.
    pub fn remove(&mut self, id: FaultId) -> bool {
        let before = self.rules.len();
        self.rules.retain(|r| r.id != id);
        before != self.rules.len()
    }

    /// Removes every rule.
    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// Number of rules with attempts left.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when no rule is installed.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Fires every matching delay rule (recording the longest delay for the front), then the
    /// first matching other rule, if any, and returns that one.
    pub(crate) fn take(
        &mut self,
        store_id: Option<u64>,
        method: &str,
        region_id: Option<u64>,
    ) -> Option<FaultAction> {
        let mut fired = None;
        let mut idx = 0;
        while idx < self.rules.len() {
            let rule = &mut self.rules[idx];
            let is_delay = matches!(rule.action, FaultAction::Delay(_));
            if (is_delay || fired.is_none()) && rule.filter.matches(store_id, method, region_id) {
                rule.remaining = rule.remaining.saturating_sub(1);
                match &rule.action {
                    FaultAction::Delay(d) => {
                        self.delay = Some(self.delay.map_or(*d, |old| old.max(*d)));
                    }
                    other => fired = Some(other.clone()),
                }
                if rule.remaining == 0 {
                    self.rules.remove(idx);
                    continue;
                }
            }
            idx += 1;
        }
        fired
    }

    /// The longest delay fired since the last call, and forgets it.
    pub(crate) fn take_delay(&mut self) -> Option<Duration> {
        self.delay.take()
    }
}

impl Cluster {
    /// The delay injected (by [`FaultAction::Delay`]) into the requests served since the last
    /// call, and forgets it. A front calls this right after each call into the engine, under
    /// the same lock, and waits that long before answering; the engine itself never sleeps.
    /// (A delay fired by a typed call made without a front stays recorded until collected.)
    pub fn take_injected_delay(&mut self) -> Option<Duration> {
        self.faults.take_delay()
    }
}

/// How a fired action turns into a failure when it is not a region error.
pub(crate) fn failure_of(action: &FaultAction) -> Option<MockError> {
    match action {
        FaultAction::RegionError(_) | FaultAction::Delay(_) => None,
        FaultAction::Unreachable => Some(MockError::unreachable("injected: store unreachable")),
        FaultAction::ReplyLost => Some(MockError::reply_lost()),
        FaultAction::Status(code, msg) => Some(MockError::status(*code, msg.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_fires_exactly_n_times_then_disappears() {
        let mut f = Faults::default();
        f.add(
            FaultFilter::any().method("RawGet"),
            FaultAction::Unreachable,
            2,
        );
        assert_eq!(f.take(Some(1), "RawPut", Some(2)), None);
        assert_eq!(
            f.take(Some(1), "RawGet", Some(2)),
            Some(FaultAction::Unreachable)
        );
        assert_eq!(
            f.take(Some(3), "RawGet", None),
            Some(FaultAction::Unreachable)
        );
        assert_eq!(f.take(Some(1), "RawGet", Some(2)), None);
        assert!(f.is_empty());
    }

    #[test]
    fn filters_on_store_and_region() {
        let mut f = Faults::default();
        f.add(
            FaultFilter::any().store(2).region(7),
            FaultAction::ReplyLost,
            1,
        );
        assert_eq!(f.take(Some(1), "RawGet", Some(7)), None);
        assert_eq!(f.take(Some(2), "RawGet", Some(8)), None);
        assert_eq!(f.take(None, "GetRegion", None), None);
        assert_eq!(
            f.take(Some(2), "RawGet", Some(7)),
            Some(FaultAction::ReplyLost)
        );
    }

    #[test]
    fn delays_fire_alongside_other_rules_and_the_longest_wins() {
        let mut f = Faults::default();
        f.add(
            FaultFilter::any().method("RawGet"),
            FaultAction::Delay(Duration::from_millis(30)),
            2,
        );
        f.add(
            FaultFilter::any().store(1),
            FaultAction::Delay(Duration::from_millis(50)),
            1,
        );
        f.add(FaultFilter::any().store(1), FaultAction::ReplyLost, 1);
        assert_eq!(f.take_delay(), None);
        assert_eq!(
            f.take(Some(1), "RawGet", None),
            Some(FaultAction::ReplyLost)
        );
        assert_eq!(f.take_delay(), Some(Duration::from_millis(50)));
        assert_eq!(f.take_delay(), None, "collected once");
        assert_eq!(f.take(Some(2), "RawGet", None), None);
        assert_eq!(f.take_delay(), Some(Duration::from_millis(30)));
        assert_eq!(f.take(Some(2), "RawGet", None), None);
        assert_eq!(f.take_delay(), None, "used up");
        assert!(f.is_empty());
    }

    #[test]
    fn first_added_rule_wins_and_remove_works() {
        let mut f = Faults::default();
        let a = f.add(FaultFilter::any(), FaultAction::Unreachable, 5);
        f.add(FaultFilter::any(), FaultAction::ReplyLost, 5);
        assert_eq!(f.take(None, "Tso", None), Some(FaultAction::Unreachable));
        assert!(f.remove(a));
        assert_eq!(f.take(None, "Tso", None), Some(FaultAction::ReplyLost));
        f.clear();
        assert_eq!(f.len(), 0);
    }
}

//! Fault injection: make the next N requests that match a filter fail in a chosen way.
//!
//! Rules are checked in the order they were added; the first match with attempts left fires
//! and uses up one attempt. Nothing here is random, so a test (or a simulation that picks its
//! faults from a seeded generator) replays exactly.

use tikv_proto::errorpb;

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

    /// Fires the first matching rule, if any.
    pub(crate) fn take(
        &mut self,
        store_id: Option<u64>,
        method: &str,
        region_id: Option<u64>,
    ) -> Option<FaultAction> {
        let idx = self
            .rules
            .iter()
            .position(|r| r.filter.matches(store_id, method, region_id))?;
        let rule = &mut self.rules[idx];
        rule.remaining -= 1;
        let action = rule.action.clone();
        if rule.remaining == 0 {
            self.rules.remove(idx);
        }
        Some(action)
    }
}

/// How a fired action turns into a failure when it is not a region error.
pub(crate) fn failure_of(action: &FaultAction) -> Option<MockError> {
    match action {
        FaultAction::RegionError(_) => None,
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

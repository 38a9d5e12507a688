//! The PD session: which PD member leads, the cluster id, and what to do when a PD call fails.
//!
//! Everything the client decides about PD lives here, as plain data; the driver only moves
//! bytes. Shaped like quinn-proto's `Endpoint`: the driver feeds in what happened
//! (`on_members`, [`PdCall::on_reply`]) and asks what to do next ([`PdCall::next`]).
//!
//! - **Discovery** (PD's `updateMember`): ask the known endpoints in order for `GetMembers`
//!   (without a request header — the cluster id may not be known yet); the first answer with
//!   the expected cluster id and a leader wins, and its member list replaces the endpoints.
//!   An endpoint of another cluster is skipped.
//! - **Calls**: sent to the leader with a header carrying the cluster id. A failure that
//!   means "the leader may have changed" (PD's not-leader answers, an unreachable leader, a
//!   timeout) makes the call rediscover and try once more; anything else fails the call. Further
//!   retries are the caller's (with `pdRPC` backoff in the operation machines).
//! - **Errors** are typed at this boundary ([`PdErrorKind`]): PD's error header by type, gRPC
//!   statuses by code. PD says "not leader" only in status messages (its Go client matches the
//!   same phrases in `IsLeaderChange`), so [`classify_status`] is the one place that reads one.

use std::fmt;

use tikv_proto::pdpb;

use crate::error::{Delivery, Error, GrpcCode};

/// PD's error header types (`pdpb.ErrorType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PdErrorType {
    /// `UNKNOWN`.
    Unknown,
    /// `NOT_BOOTSTRAPPED`: the cluster has not been bootstrapped.
    NotBootstrapped,
    /// `STORE_TOMBSTONE`: the store was removed.
    StoreTombstone,
    /// `ALREADY_BOOTSTRAPPED`.
    AlreadyBootstrapped,
    /// `INCOMPATIBLE_VERSION`.
    IncompatibleVersion,
    /// `REGION_NOT_FOUND` (sent by followers; the leader answers OK without a region).
    RegionNotFound,
    /// `GLOBAL_CONFIG_NOT_FOUND`.
    GlobalConfigNotFound,
    /// `DUPLICATED_ENTRY`.
    DuplicatedEntry,
    /// `ENTRY_NOT_FOUND` (e.g. an unknown keyspace).
    EntryNotFound,
    /// `INVALID_VALUE`.
    InvalidValue,
    /// `DATA_COMPACTED`.
    DataCompacted,
    /// `REGIONS_NOT_CONTAIN_ALL_KEY_RANGE`.
    RegionsNotContainAllKeyRange,
    /// A type this client does not know, by number.
    Other(i32),
}

impl PdErrorType {
    /// The type for `pdpb.Error.type`.
    pub fn from_i32(v: i32) -> Self {
        use pdpb::ErrorType as T;
        match T::try_from(v) {
            Ok(T::Ok | T::Unknown) => PdErrorType::Unknown,
            Ok(T::NotBootstrapped) => PdErrorType::NotBootstrapped,
            Ok(T::StoreTombstone) => PdErrorType::StoreTombstone,
            Ok(T::AlreadyBootstrapped) => PdErrorType::AlreadyBootstrapped,
            Ok(T::IncompatibleVersion) => PdErrorType::IncompatibleVersion,
            Ok(T::RegionNotFound) => PdErrorType::RegionNotFound,
            Ok(T::GlobalConfigNotFound) => PdErrorType::GlobalConfigNotFound,
            Ok(T::DuplicatedEntry) => PdErrorType::DuplicatedEntry,
            Ok(T::EntryNotFound) => PdErrorType::EntryNotFound,
            Ok(T::InvalidValue) => PdErrorType::InvalidValue,
            Ok(T::DataCompacted) => PdErrorType::DataCompacted,
            Ok(T::RegionsNotContainAllKeyRange) => PdErrorType::RegionsNotContainAllKeyRange,
            Err(_) => PdErrorType::Other(v),
        }
    }
}

/// Why a PD call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PdErrorKind {
    /// The member asked is not (or no longer) the leader, or the cluster has none right now.
    NotLeader,
    /// The member could not be reached, or the call broke in transport.
    Unreachable(Delivery),
    /// The member answered with a gRPC status.
    Status(GrpcCode),
    /// The member answered with PD's error header.
    Header(PdErrorType),
    /// The member belongs to another cluster.
    ClusterMismatch {
        /// The cluster id the client works with.
        expected: u64,
        /// The one the member reported.
        got: u64,
    },
    /// The answer cannot be used (does not decode, lacks a field, a timestamp going backwards).
    InvalidResponse,
    /// What was asked for does not exist (a store, a keyspace).
    NotFound,
    /// PD refused the request for what it asks, not for how it got there (a GC safe point
    /// moving backwards, a barrier below the txn safe point, an invalid argument): the same
    /// request fails the same way again.
    Refused,
}

impl PdErrorKind {
    /// Whether PD's leader may have changed, so that asking the members again and retrying
    /// the call is worthwhile.
    pub fn is_leader_change(self) -> bool {
        matches!(
            self,
            PdErrorKind::NotLeader
                | PdErrorKind::Unreachable(_)
                | PdErrorKind::Status(GrpcCode::Unavailable | GrpcCode::DeadlineExceeded)
        )
    }

    /// Whether trying the operation again later may succeed.
    pub fn is_retryable(self) -> bool {
        match self {
            PdErrorKind::NotLeader | PdErrorKind::Unreachable(_) => true,
            PdErrorKind::Status(code) => matches!(
                code,
                GrpcCode::Unavailable
                    | GrpcCode::DeadlineExceeded
                    | GrpcCode::ResourceExhausted
                    | GrpcCode::Aborted
                    | GrpcCode::Unknown
                    | GrpcCode::Internal
            ),
            PdErrorKind::Header(t) => matches!(
                t,
                PdErrorType::Unknown | PdErrorType::NotBootstrapped | PdErrorType::RegionNotFound
            ),
            PdErrorKind::ClusterMismatch { .. }
            | PdErrorKind::InvalidResponse
            | PdErrorKind::NotFound
            | PdErrorKind::Refused => false,
        }
    }
}

impl fmt::Display for PdErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PdErrorKind::NotLeader => f.write_str("not leader"),
            PdErrorKind::Unreachable(d) => write!(f, "unreachable ({d:?})"),
            PdErrorKind::Status(code) => write!(f, "gRPC status {code:?}"),
            PdErrorKind::Header(t) => write!(f, "{t:?}"),
            PdErrorKind::ClusterMismatch { expected, got } => {
                write!(f, "cluster id {got}, expected {expected}")
            }
            PdErrorKind::InvalidResponse => f.write_str("invalid response"),
            PdErrorKind::NotFound => f.write_str("not found"),
            PdErrorKind::Refused => f.write_str("refused"),
        }
    }
}

/// Phrases PD puts in the messages of its not-leader answers (its `NotLeaderErr`,
/// `NoLeaderErr`, `NotServedErr`, `NotPrimaryErr`).
const NOT_LEADER_PHRASES: [&str; 4] = ["not leader", "no leader", "is not served", "not primary"];

/// The error codes (PD's `[PD:<component>:<name>]` message prefix) of refusals: errors of
/// the request itself, which no retry cures.
const REFUSAL_CODES: [&str; 2] = ["[PD:gc:", "[PD:common:ErrInvalidArgument]"];

/// The kind of a gRPC status from PD.
pub fn classify_status(code: GrpcCode, message: &str) -> PdErrorKind {
    if NOT_LEADER_PHRASES.iter().any(|p| message.contains(p)) {
        return PdErrorKind::NotLeader;
    }
    PdErrorKind::Status(code)
}

/// How a PD call failed below PD's own answer, as the transport saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PdFailure {
    /// Whether the request may have reached PD.
    pub delivery: Delivery,
    /// The gRPC status, when PD (rather than the transport) ended the call.
    pub status: Option<GrpcCode>,
    /// What was reported.
    pub message: String,
}

impl PdFailure {
    /// The typed error for a failed `method` call to `address`.
    pub fn into_error(self, method: &'static str, address: &str) -> Error {
        let kind = match self.status {
            Some(code) => classify_status(code, &self.message),
            None => PdErrorKind::Unreachable(self.delivery),
        };
        Error::Pd {
            method,
            address: address.to_string(),
            kind,
            message: self.message,
        }
    }
}

/// The error in a PD response header, if any, as a typed error.
pub fn header_error(
    method: &'static str,
    address: &str,
    header: Option<&pdpb::ResponseHeader>,
) -> Result<(), Error> {
    let Some(error) = header.and_then(|h| h.error.as_ref()) else {
        return Ok(());
    };
    let kind = match PdErrorType::from_i32(error.r#type) {
        // PD reports a follower asked for leader-only work as UNKNOWN "not leader".
        PdErrorType::Unknown => match classify_status(GrpcCode::Unknown, &error.message) {
            PdErrorKind::NotLeader => PdErrorKind::NotLeader,
            // PD's GC-state API answers every refusal as UNKNOWN with its error code.
            _ if REFUSAL_CODES.iter().any(|c| error.message.starts_with(c)) => PdErrorKind::Refused,
            _ => PdErrorKind::Header(PdErrorType::Unknown),
        },
        t => PdErrorKind::Header(t),
    };
    Err(Error::Pd {
        method,
        address: address.to_string(),
        kind,
        message: error.message.clone(),
    })
}

/// `host:port` from a PD URL (`http://host:port`, `https://...`, or already bare).
pub fn address_of(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    rest.trim_end_matches('/').to_string()
}

/// What the client knows about the PD cluster.
#[derive(Clone, Debug)]
pub struct PdSession {
    /// Where to look for members: the configured endpoints, then PD's member list.
    endpoints: Vec<String>,
    cluster_id: u64,
    leader: Option<String>,
    component: String,
}

impl PdSession {
    /// A session that will discover the cluster from `endpoints` (`host:port` or URLs).
    pub fn new(endpoints: &[impl AsRef<str>], component: impl Into<String>) -> Result<Self, Error> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| address_of(e.as_ref()))
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(Error::InvalidArgument("no PD endpoints given".into()));
        }
        Ok(PdSession {
            endpoints,
            cluster_id: 0,
            leader: None,
            component: component.into(),
        })
    }

    /// The cluster id (0 until discovery succeeded).
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The leader's address, if known.
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// The endpoints discovery asks, in order.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The header for requests to the leader.
    pub fn header(&self) -> pdpb::RequestHeader {
        pdpb::RequestHeader {
            cluster_id: self.cluster_id,
            caller_component: self.component.clone(),
            ..Default::default()
        }
    }

    /// Forgets the leader (it failed us); the next call discovers first.
    pub fn leader_failed(&mut self, address: &str) {
        if self.leader.as_deref() == Some(address) {
            self.leader = None;
        }
    }

    /// Takes `endpoint`'s answer to `GetMembers`: adopts its leader and member list when it
    /// belongs to our cluster and names a leader.
    pub fn on_members(
        &mut self,
        endpoint: &str,
        reply: &pdpb::GetMembersResponse,
    ) -> Result<(), Error> {
        let error = |kind, message: String| Error::Pd {
            method: "GetMembers",
            address: endpoint.to_string(),
            kind,
            message,
        };
        header_error("GetMembers", endpoint, reply.header.as_ref())?;
        let cluster_id = reply.header.as_ref().map_or(0, |h| h.cluster_id);
        if cluster_id == 0 {
            return Err(error(
                PdErrorKind::InvalidResponse,
                "no cluster id in the reply".into(),
            ));
        }
        if self.cluster_id != 0 && cluster_id != self.cluster_id {
            let kind = PdErrorKind::ClusterMismatch {
                expected: self.cluster_id,
                got: cluster_id,
            };
            return Err(error(kind, "a member of another cluster".into()));
        }
        let Some(leader_url) = reply.leader.as_ref().and_then(|l| l.client_urls.first()) else {
            return Err(error(
                PdErrorKind::NotLeader,
                "the cluster has no leader".into(),
            ));
        };
        let mut members: Vec<String> = reply
            .members
            .iter()
            .flat_map(|m| m.client_urls.iter().map(|u| address_of(u)))
            .collect();
        members.sort();
        members.dedup();
        if !members.is_empty() {
            self.endpoints = members;
        }
        self.cluster_id = cluster_id;
        self.leader = Some(address_of(leader_url));
        Ok(())
    }
}

/// What a [`PdCall`] wants next.
#[derive(Clone, Debug, PartialEq)]
pub enum PdStep {
    /// Send the call to the leader at this address.
    Send(String),
    /// Ask this endpoint for the members (`GetMembers`, no header).
    AskMembers(String),
    /// The call failed for good.
    Fail(Error),
}

#[derive(Clone, Debug)]
enum CallState {
    /// Send to the leader (discover first if none is known).
    Ready,
    /// Discovering: the index of the next endpoint to ask, and the last failure.
    Discovering(usize, Option<Box<Error>>),
    /// A discovery-only call found the leader.
    Found,
    Failed(Box<Error>),
}

/// One PD call, from the first send to its last retry: decides where each attempt goes.
#[derive(Clone, Debug)]
pub struct PdCall {
    method: &'static str,
    /// Sends after a rediscovery left (one, as PD's client allows).
    retries: u32,
    /// Only find the leader; send nothing.
    discovery_only: bool,
    state: CallState,
}

impl PdCall {
    /// A call of `method` (for errors).
    pub fn new(method: &'static str) -> Self {
        PdCall {
            method,
            retries: 1,
            discovery_only: false,
            state: CallState::Ready,
        }
    }

    /// A discovery alone (bootstrap, or after the TSO stream failed): done when a leader is
    /// known.
    pub fn discovery() -> Self {
        PdCall {
            method: "GetMembers",
            retries: 0,
            discovery_only: true,
            state: CallState::Discovering(0, None),
        }
    }

    /// Where the next attempt goes; `None` once a discovery-only call has found the leader.
    pub fn next(&mut self, session: &PdSession) -> Option<PdStep> {
        loop {
            match &mut self.state {
                CallState::Found => return None,
                CallState::Failed(e) => return Some(PdStep::Fail((**e).clone())),
                CallState::Ready => match session.leader() {
                    Some(leader) => return Some(PdStep::Send(leader.to_string())),
                    None => self.state = CallState::Discovering(0, None),
                },
                CallState::Discovering(i, last) => {
                    if let Some(endpoint) = session.endpoints().get(*i) {
                        return Some(PdStep::AskMembers(endpoint.clone()));
                    }
                    // The last endpoint's failure says best what is wrong (all down, or
                    // no leader elected).
                    let (kind, detail) = match last.as_deref() {
                        Some(Error::Pd { kind, message, .. }) => (*kind, message.clone()),
                        Some(other) => (PdErrorKind::NotLeader, other.to_string()),
                        None => (PdErrorKind::NotLeader, String::new()),
                    };
                    let error = Error::Pd {
                        method: self.method,
                        address: session.endpoints().join(","),
                        kind,
                        message: format!("no PD endpoint answered with a leader ({detail})"),
                    };
                    self.state = CallState::Failed(Box::new(error.clone()));
                    return Some(PdStep::Fail(error));
                }
            }
        }
    }

    /// Takes `endpoint`'s answer to `GetMembers` (or why it failed).
    pub fn on_members(
        &mut self,
        session: &mut PdSession,
        endpoint: &str,
        reply: Result<pdpb::GetMembersResponse, Error>,
    ) -> Option<Result<(), Error>> {
        let CallState::Discovering(i, last) = &mut self.state else {
            return None;
        };
        match reply.and_then(|r| session.on_members(endpoint, &r)) {
            Ok(()) if self.discovery_only => {
                self.state = CallState::Found;
                Some(Ok(()))
            }
            Ok(()) => {
                self.state = CallState::Ready;
                None
            }
            Err(e) => {
                *i += 1;
                *last = Some(Box::new(e));
                None
            }
        }
    }

    /// Takes the outcome of a send to `address`: `Some` with the call's result when it is
    /// over, `None` when it should go on ([`next`](Self::next) says where).
    pub fn on_reply(
        &mut self,
        session: &mut PdSession,
        address: &str,
        reply: Result<(), Error>,
    ) -> Option<Result<(), Error>> {
        let error = match reply {
            Ok(()) => return Some(Ok(())),
            Err(e) => e,
        };
        let leader_change = matches!(&error, Error::Pd { kind, .. } if kind.is_leader_change());
        if leader_change && self.retries > 0 {
            self.retries -= 1;
            session.leader_failed(address);
            self.state = CallState::Discovering(0, Some(Box::new(error)));
            return None;
        }
        Some(Err(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(cluster_id: u64, leader: &str, all: &[&str]) -> pdpb::GetMembersResponse {
        let member = |url: &str| pdpb::Member {
            client_urls: vec![format!("http://{url}")],
            ..Default::default()
        };
        pdpb::GetMembersResponse {
            header: Some(pdpb::ResponseHeader {
                cluster_id,
                ..Default::default()
            }),
            members: all.iter().map(|u| member(u)).collect(),
            leader: (!leader.is_empty()).then(|| member(leader)),
            ..Default::default()
        }
    }

    fn pd_error(kind: PdErrorKind) -> Error {
        Error::Pd {
            method: "GetRegion",
            address: "pd-1".into(),
            kind,
            message: String::new(),
        }
    }

    fn session() -> PdSession {
        PdSession::new(&["http://pd-1:2379", "pd-2:2379/"], "test").unwrap()
    }

    #[test]
    fn endpoints_are_normalised_and_required() {
        assert_eq!(session().endpoints(), ["pd-1:2379", "pd-2:2379"]);
        assert!(PdSession::new(&[""; 0], "t").is_err());
        assert!(PdSession::new(&[""], "t").is_err());
    }

    #[test]
    fn discovery_adopts_leader_members_and_cluster_id() {
        let mut s = session();
        let reply = members(7, "pd-3:2379", &["pd-3:2379", "pd-1:2379"]);
        s.on_members("pd-1:2379", &reply).unwrap();
        assert_eq!(s.cluster_id(), 7);
        assert_eq!(s.leader(), Some("pd-3:2379"));
        assert_eq!(s.endpoints(), ["pd-1:2379", "pd-3:2379"]);
        assert_eq!(s.header().cluster_id, 7);
    }

    #[test]
    fn a_member_of_another_cluster_is_rejected() {
        let mut s = session();
        s.on_members("pd-1:2379", &members(7, "pd-1:2379", &[]))
            .unwrap();
        let e = s
            .on_members("pd-2:2379", &members(8, "pd-2:2379", &[]))
            .unwrap_err();
        assert!(matches!(
            e,
            Error::Pd {
                kind: PdErrorKind::ClusterMismatch {
                    expected: 7,
                    got: 8
                },
                ..
            }
        ));
        assert_eq!(s.leader(), Some("pd-1:2379"), "the old leader stays");
    }

    #[test]
    fn replies_without_leader_or_cluster_id_are_not_adopted() {
        let mut s = session();
        let e = s
            .on_members("pd-1:2379", &members(7, "", &["pd-1:2379"]))
            .unwrap_err();
        assert!(matches!(
            e,
            Error::Pd {
                kind: PdErrorKind::NotLeader,
                ..
            }
        ));
        let e = s
            .on_members("pd-1:2379", &members(0, "pd-1:2379", &[]))
            .unwrap_err();
        assert!(matches!(
            e,
            Error::Pd {
                kind: PdErrorKind::InvalidResponse,
                ..
            }
        ));
        assert_eq!(s.leader(), None);
    }

    #[test]
    fn statuses_and_headers_are_typed() {
        // (code, message) → kind, as PD's answers look.
        let table = [
            (GrpcCode::Unavailable, "not leader", PdErrorKind::NotLeader),
            (
                GrpcCode::Unknown,
                "[PD:server:ErrNotLeader]no leader",
                PdErrorKind::NotLeader,
            ),
            (
                GrpcCode::Unavailable,
                "connection refused",
                PdErrorKind::Status(GrpcCode::Unavailable),
            ),
            (
                GrpcCode::FailedPrecondition,
                "mismatch cluster id",
                PdErrorKind::Status(GrpcCode::FailedPrecondition),
            ),
        ];
        for (code, message, kind) in table {
            assert_eq!(classify_status(code, message), kind, "{message}");
        }
        let header = |t: pdpb::ErrorType, message: &str| pdpb::ResponseHeader {
            error: Some(pdpb::Error {
                r#type: t as i32,
                message: message.into(),
            }),
            ..Default::default()
        };
        let kind = |h: pdpb::ResponseHeader| match header_error("GetRegion", "pd", Some(&h)) {
            Err(Error::Pd { kind, .. }) => kind,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            kind(header(pdpb::ErrorType::RegionNotFound, "")),
            PdErrorKind::Header(PdErrorType::RegionNotFound)
        );
        assert_eq!(
            kind(header(pdpb::ErrorType::Unknown, "not leader")),
            PdErrorKind::NotLeader
        );
        assert_eq!(
            kind(header(pdpb::ErrorType::Unknown, "disk")),
            PdErrorKind::Header(PdErrorType::Unknown)
        );
        let refused = kind(header(
            pdpb::ErrorType::Unknown,
            "[PD:gc:ErrDecreasingTxnSafePoint]trying to update txn safe point to a smaller value",
        ));
        assert_eq!(refused, PdErrorKind::Refused);
        assert!(!refused.is_retryable(), "the same request fails again");
        assert_eq!(PdErrorType::from_i32(99), PdErrorType::Other(99));
        assert!(header_error("GetRegion", "pd", None).is_ok());
    }

    #[test]
    fn failures_without_status_are_unreachable() {
        let f = PdFailure {
            delivery: Delivery::NotSent,
            status: None,
            message: "connection refused".into(),
        };
        let e = f.into_error("GetStore", "pd-1:2379");
        assert!(matches!(
            &e,
            Error::Pd { kind: PdErrorKind::Unreachable(Delivery::NotSent), address, .. } if address == "pd-1:2379"
        ));
        assert!(e.to_string().contains("pd-1:2379"), "{e}");
    }

    #[test]
    fn call_discovers_first_when_no_leader_is_known() {
        let mut s = session();
        let mut call = PdCall::new("GetRegion");
        assert_eq!(call.next(&s), Some(PdStep::AskMembers("pd-1:2379".into())));
        // The first endpoint is down: the next one is asked.
        let down = pd_error(PdErrorKind::Unreachable(Delivery::NotSent));
        assert_eq!(call.on_members(&mut s, "pd-1:2379", Err(down)), None);
        assert_eq!(call.next(&s), Some(PdStep::AskMembers("pd-2:2379".into())));
        let reply = Ok(members(3, "pd-2:2379", &["pd-2:2379"]));
        assert_eq!(call.on_members(&mut s, "pd-2:2379", reply), None);
        assert_eq!(call.next(&s), Some(PdStep::Send("pd-2:2379".into())));
        assert_eq!(call.on_reply(&mut s, "pd-2:2379", Ok(())), Some(Ok(())));
    }

    #[test]
    fn leader_change_rediscovers_and_retries_once() {
        let mut s = session();
        s.on_members(
            "pd-1:2379",
            &members(1, "pd-1:2379", &["pd-1:2379", "pd-2:2379"]),
        )
        .unwrap();
        let mut call = PdCall::new("GetRegion");
        assert_eq!(call.next(&s), Some(PdStep::Send("pd-1:2379".into())));
        let not_leader = Err(pd_error(PdErrorKind::NotLeader));
        assert_eq!(call.on_reply(&mut s, "pd-1:2379", not_leader.clone()), None);
        assert_eq!(s.leader(), None, "the failed leader is forgotten");
        assert_eq!(call.next(&s), Some(PdStep::AskMembers("pd-1:2379".into())));
        let moved = Ok(members(1, "pd-2:2379", &["pd-1:2379", "pd-2:2379"]));
        call.on_members(&mut s, "pd-1:2379", moved);
        assert_eq!(call.next(&s), Some(PdStep::Send("pd-2:2379".into())));
        // A second leader change is the caller's to retry (with backoff).
        let out = call.on_reply(&mut s, "pd-2:2379", not_leader);
        assert!(matches!(
            out,
            Some(Err(Error::Pd {
                kind: PdErrorKind::NotLeader,
                ..
            }))
        ));
    }

    #[test]
    fn errors_that_are_not_leader_changes_fail_at_once() {
        let mut s = session();
        s.on_members("pd-1:2379", &members(1, "pd-1:2379", &[]))
            .unwrap();
        for kind in [
            PdErrorKind::Header(PdErrorType::StoreTombstone),
            PdErrorKind::Status(GrpcCode::InvalidArgument),
            PdErrorKind::InvalidResponse,
        ] {
            let mut call = PdCall::new("GetStore");
            call.next(&s);
            let out = call.on_reply(&mut s, "pd-1:2379", Err(pd_error(kind)));
            assert!(matches!(out, Some(Err(_))), "{kind:?}");
            assert_eq!(s.leader(), Some("pd-1:2379"), "{kind:?} keeps the leader");
        }
    }

    #[test]
    fn discovery_that_finds_no_leader_fails_naming_the_endpoints() {
        let mut s = session();
        let mut call = PdCall::discovery();
        for endpoint in ["pd-1:2379", "pd-2:2379"] {
            assert_eq!(call.next(&s), Some(PdStep::AskMembers(endpoint.into())));
            let down = pd_error(PdErrorKind::Unreachable(Delivery::NotSent));
            call.on_members(&mut s, endpoint, Err(down));
        }
        match call.next(&s) {
            Some(PdStep::Fail(Error::Pd {
                address,
                kind: PdErrorKind::Unreachable(Delivery::NotSent),
                ..
            })) => {
                assert_eq!(address, "pd-1:2379,pd-2:2379");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn discovery_alone_ends_when_a_leader_is_found() {
        let mut s = session();
        let mut call = PdCall::discovery();
        call.next(&s);
        let out = call.on_members(&mut s, "pd-1:2379", Ok(members(5, "pd-2:2379", &[])));
        assert_eq!(out, Some(Ok(())));
        assert_eq!(s.leader(), Some("pd-2:2379"));
    }
}

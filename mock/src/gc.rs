//! PD's GC-state API: txn safe point, GC safe point, GC barriers and global GC barriers, per
//! keyspace, plus the legacy safe-point calls and `GetMinTS`.
//!
//! Semantics follow tikv/pd `pkg/gc/gc_state_manager.go` (the rules) and
//! `server/gc_service.go` (the wire):
//!
//! - **Txn safe point** `t`: snapshots at or after it are safe to read. It never decreases,
//!   and `AdvanceTxnSafePoint` stops below the lowest unexpired GC barrier or global GC
//!   barrier: the new value is `max(t, min(target, barriers))`, and the response names the
//!   blocker. Expired barriers are deleted lazily, by that call only; reads still list them.
//! - **GC safe point** `g`: versions before it may be discarded. It never decreases and never
//!   passes the txn safe point (`AdvanceGCSafePoint` fails; the legacy `UpdateGCSafePoint`
//!   ignores a smaller value but still fails above the txn safe point).
//! - **GC barriers** (per keyspace) and **global GC barriers**: a TTL in seconds (values too
//!   large for Go's `time.Duration` mean "never expires", reported as `i64::MAX`), expiry
//!   rounded up to a whole second, a barrier may not be set below the txn safe point (a
//!   global one: below the largest txn safe point of all keyspaces). `gc_worker` is reserved.
//! - **Keyspaces**: a request without a keyspace scope, or with an id outside the 24-bit
//!   range, addresses the null keyspace (`0xFFFFFFFF`). A keyspace without keyspace-level GC
//!   shares the null keyspace's state: user calls (`GetGCState`, barriers) are redirected to
//!   it, while the GC-driving calls (`AdvanceTxnSafePoint`, `AdvanceGCSafePoint`) are
//!   refused. An unknown keyspace id is an error.
//! - Failures of the new API are an OK response with an `UNKNOWN` header carrying PD's error
//!   text (`[PD:gc:...]...`); the legacy calls return them as gRPC `Unknown` instead.
//!
//! Time is `now_ms` (PD uses its wall clock; `UpdateServiceGCSafePoint` uses a fresh TSO,
//! so the mock allocates one too). Whether reads below the GC safe point fail is not PD's
//! business, nor TiKV's: TiKV serves them (a proposed check, tikv/tikv#5687, was closed
//! unmerged) and clients guard against them (client-go `CheckVisibility` against the txn
//! safe point). The mock's MVCC engine keeps every version, so such reads simply succeed.

use std::collections::BTreeMap;

use tikv_proto::pdpb::{self, keyspace_scope};

use crate::cluster::Cluster;
use crate::error::{Code, MockError};
use crate::pd::{error_header, ok_header};

/// The keyspace id that means "no keyspace" (API V1 and unified GC).
pub const NULL_KEYSPACE_ID: u32 = 0xFFFF_FFFF;
/// Valid keyspace ids fit in 24 bits; PD treats anything else as the null keyspace.
const VALID_KEYSPACE_MASK: u32 = 0x00FF_FFFF;
/// The barrier id reserved for the old GC worker's service safe point.
const GC_WORKER: &str = "gc_worker";
/// The legacy service id that maps to a global GC barrier.
const NATIVE_BR: &str = "native_br";
/// The largest TTL in seconds that Go's `time.Duration` (nanoseconds in an `i64`) holds;
/// PD saturates anything larger to "never expires".
const MAX_FINITE_TTL_SECONDS: i64 = i64::MAX / 1_000_000_000;

/// A GC barrier (or global GC barrier): a timestamp the txn safe point may not pass.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Barrier {
    ts: u64,
    /// Expiry in ms since the epoch, always a whole second; `None` never expires.
    expires_ms: Option<u64>,
}

impl Barrier {
    /// `ttl_seconds` must be positive; PD rounds the expiry up to a whole second.
    fn new(ts: u64, ttl_seconds: i64, now_ms: u64) -> Barrier {
        let expires_ms = (ttl_seconds <= MAX_FINITE_TTL_SECONDS).then(|| {
            let at = now_ms.saturating_add(ttl_seconds.unsigned_abs().saturating_mul(1000));
            at.div_ceil(1000).saturating_mul(1000)
        });
        Barrier { ts, expires_ms }
    }

    /// Expired strictly after its expiry time, as PD's `IsExpired`.
    fn expired(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|at| now_ms > at)
    }

    /// The remaining TTL as PD reports it: whole seconds rounded down, never negative.
    fn ttl_seconds(&self, now_ms: u64) -> i64 {
        match self.expires_ms {
            None => i64::MAX,
            Some(at) => i64::try_from(at.saturating_sub(now_ms) / 1000).unwrap_or(i64::MAX),
        }
    }

    /// PD's `String()` of the barrier, used in `blocker_description`.
    fn describe(&self, kind: &str, id: &str) -> String {
        let expiry = match self.expires_ms {
            None => "<nil>".to_owned(),
            Some(at) => go_utc_time(at / 1000),
        };
        format!(
            "{kind} {{ BarrierID: {}, BarrierTS: {}, ExpirationTime: {} }}",
            go_quote(id),
            self.ts,
            go_quote(&expiry)
        )
    }

    fn info(&self, id: &str, now_ms: u64) -> pdpb::GcBarrierInfo {
        pdpb::GcBarrierInfo {
            barrier_id: id.to_owned(),
            barrier_ts: self.ts,
            ttl_seconds: self.ttl_seconds(now_ms),
        }
    }

    fn global_info(&self, id: &str, now_ms: u64) -> pdpb::GlobalGcBarrierInfo {
        pdpb::GlobalGcBarrierInfo {
            barrier_id: id.to_owned(),
            barrier_ts: self.ts,
            ttl_seconds: self.ttl_seconds(now_ms),
        }
    }
}

/// Go's `%+q`: a double-quoted string with non-ASCII escaped.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            ' '..='~' => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) <= 0xFFFF => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Go's `time.Time.String()` of a whole-second instant in UTC
/// (`2023-11-14 22:13:20 +0000 UTC`); the mock has no local time zone.
fn go_utc_time(unix_seconds: u64) -> String {
    let days = unix_seconds / 86_400;
    let secs = unix_seconds % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm), in unsigned form as
    // the mock never sees instants before the epoch.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} +0000 UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// PD's `ErrInvalidArgument` text for a TTL: the saturated `time.Duration`, which is `0s`
/// for every non-positive number of seconds.
fn invalid_ttl() -> String {
    "[PD:common:ErrInvalidArgument]invalid argument for ttl: 0s".to_owned()
}

fn invalid_barrier_id() -> String {
    "[PD:common:ErrInvalidArgument]invalid argument for barrierID: ".to_owned()
}

fn reserved_barrier_id(id: &str) -> String {
    format!(
        "[PD:gc:ErrReservedGCBarrierID]trying to set a GC barrier with a barrier ID that is reserved: {id}"
    )
}

/// The GC state of one keyspace (or of the null keyspace).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct KeyspaceGc {
    txn_safe_point: u64,
    gc_safe_point: u64,
    /// By barrier id: PD stores them under one etcd prefix and lists them in key order.
    barriers: BTreeMap<String, Barrier>,
}

/// A keyspace as the GC API sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct KeyspaceEntry {
    name: String,
    keyspace_level_gc: bool,
}

/// The outcome of advancing a txn safe point.
struct Advanced {
    old: u64,
    new: u64,
    /// PD's description of what stopped the advance (empty if nothing did).
    blocker_description: String,
    /// The id of that blocker, for the legacy service-safe-point answer.
    blocker_id: Option<String>,
}

/// Every keyspace's GC state and the global GC barriers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GcStates {
    keyspaces: BTreeMap<u32, KeyspaceEntry>,
    /// By keyspace id: the null keyspace and keyspaces with keyspace-level GC.
    states: BTreeMap<u32, KeyspaceGc>,
    global: BTreeMap<String, Barrier>,
    /// PD's external timestamp (0 until set).
    external_ts: u64,
}

impl Default for GcStates {
    /// The `DEFAULT` keyspace (id 0) exists on a real PD, with unified GC.
    fn default() -> Self {
        let keyspaces = BTreeMap::from([(
            0,
            KeyspaceEntry {
                name: "DEFAULT".to_owned(),
                keyspace_level_gc: false,
            },
        )]);
        GcStates {
            keyspaces,
            states: BTreeMap::new(),
            global: BTreeMap::new(),
            external_ts: 0,
        }
    }
}

/// The keyspace id a request addresses: PD reads `keyspace_scope.keyspace_id`, which is 0
/// when the scope names its keyspace by identity instead (only ids are understood).
fn scope_id(scope: Option<&pdpb::KeyspaceScope>) -> u32 {
    match scope {
        None => NULL_KEYSPACE_ID,
        Some(s) => match s.keyspace {
            Some(keyspace_scope::Keyspace::KeyspaceId(id)) => id,
            _ => 0,
        },
    }
}

impl GcStates {
    /// Which state a request for `id` operates on. User calls on a keyspace with unified GC
    /// use the null keyspace's state; GC-driving calls on it are refused.
    fn resolve(&self, id: u32, user_api: bool) -> Result<u32, String> {
        if id & !VALID_KEYSPACE_MASK != 0 {
            return Ok(NULL_KEYSPACE_ID);
        }
        let entry = self
            .keyspaces
            .get(&id)
            .ok_or_else(|| "[PD:keyspace:ErrKeyspaceNotFound]keyspace does not exist".to_owned())?;
        if entry.keyspace_level_gc {
            Ok(id)
        } else if user_api {
            Ok(NULL_KEYSPACE_ID)
        } else {
            Err(format!(
                "[PD:gc:ErrGCOnInvalidKeyspace]trying to manage GC in keyspace {} (id: {id}) where keyspace level GC is not enabled",
                entry.name
            ))
        }
    }

    fn state(&self, id: u32) -> KeyspaceGc {
        self.states.get(&id).cloned().unwrap_or_default()
    }

    fn state_mut(&mut self, id: u32) -> &mut KeyspaceGc {
        self.states.entry(id).or_default()
    }

    fn advance_txn(&mut self, id: u32, target: u64, now_ms: u64) -> Result<Advanced, String> {
        let state = self.state_mut(id);
        let old = state.txn_safe_point;
        if target < old {
            return Err(format!(
                "[PD:gc:ErrDecreasingTxnSafePoint]trying to update txn safe point to a smaller value, current value: {old}, given: {target}"
            ));
        }
        // Expired barriers are deleted here, and only here: once judged expired they must
        // stay gone, or a later call could see them block again.
        state.barriers.retain(|_, b| !b.expired(now_ms));
        let mut min = target;
        let mut local: Option<(String, Barrier)> = None;
        for (bid, b) in &state.barriers {
            if b.ts < min {
                min = b.ts;
                local = Some((bid.clone(), b.clone()));
            }
        }
        self.global.retain(|_, b| !b.expired(now_ms));
        let mut global: Option<(String, Barrier)> = None;
        for (bid, b) in &self.global {
            if b.ts < min {
                min = b.ts;
                global = Some((bid.clone(), b.clone()));
            }
        }
        let new = old.max(min);
        self.state_mut(id).txn_safe_point = new;
        // A global barrier found lower than every local one is the one that blocked.
        let (blocker_description, blocker_id) = match (global, local) {
            (Some((bid, b)), _) => (b.describe("GlobalGCBarrier", &bid), Some(bid)),
            (None, Some((bid, b))) => (b.describe("GCBarrier", &bid), Some(bid)),
            (None, None) => (String::new(), None),
        };
        Ok(Advanced {
            old,
            new,
            blocker_description,
            blocker_id,
        })
    }

    /// `compatible`: the legacy call, which keeps the old value instead of failing when
    /// asked to go backwards (callers pass 0 to read it).
    fn advance_gc(&mut self, id: u32, target: u64, compatible: bool) -> Result<(u64, u64), String> {
        let state = self.state_mut(id);
        let old = state.gc_safe_point;
        if target < old {
            if compatible {
                return Ok((old, old));
            }
            return Err(format!(
                "[PD:gc:ErrDecreasingGCSafePoint]trying to update GC safe point to a smaller value, current value: {old}, given: {target}"
            ));
        }
        if target > state.txn_safe_point {
            return Err(format!(
                "[PD:gc:ErrGCSafePointExceedsTxnSafePoint]trying to update GC safe point to a too large value that exceeds the txn safe point, current value: {old}, given: {target}, current txn safe point: {}",
                state.txn_safe_point
            ));
        }
        state.gc_safe_point = target;
        Ok((old, target))
    }

    /// Sets a barrier on a resolved keyspace; `ttl_seconds` is positive.
    fn set_barrier(
        &mut self,
        id: u32,
        barrier_id: &str,
        ts: u64,
        ttl_seconds: i64,
        now_ms: u64,
    ) -> Result<Barrier, String> {
        if barrier_id == GC_WORKER {
            return Err(reserved_barrier_id(barrier_id));
        }
        if barrier_id.is_empty() {
            return Err(invalid_barrier_id());
        }
        let state = self.state_mut(id);
        if ts < state.txn_safe_point {
            return Err(format!(
                "[PD:gc:ErrGCBarrierTSBehindTxnSafePoint]trying to set a GC barrier on ts {ts} which is already behind the txn safe point {}",
                state.txn_safe_point
            ));
        }
        let barrier = Barrier::new(ts, ttl_seconds, now_ms);
        state
            .barriers
            .insert(barrier_id.to_owned(), barrier.clone());
        Ok(barrier)
    }

    fn delete_barrier(&mut self, id: u32, barrier_id: &str) -> Result<Option<Barrier>, String> {
        if barrier_id == GC_WORKER {
            return Err(reserved_barrier_id(barrier_id));
        }
        if barrier_id.is_empty() {
            return Err(invalid_barrier_id());
        }
        Ok(self.state_mut(id).barriers.remove(barrier_id))
    }

    /// The largest txn safe point over the enabled keyspaces and the null keyspace, and who
    /// holds it (for PD's error text). On a tie a keyspace wins over the null keyspace.
    fn max_txn_safe_point(&self) -> (u64, String) {
        let mut max = 0;
        let mut holder = "<null_keyspace>".to_owned();
        for (id, entry) in &self.keyspaces {
            let ts = self.states.get(id).map_or(0, |s| s.txn_safe_point);
            if ts > max {
                max = ts;
                holder = format!("{{ name: {}, id: {id} }}", go_quote(&entry.name));
            }
        }
        let null = self
            .states
            .get(&NULL_KEYSPACE_ID)
            .map_or(0, |s| s.txn_safe_point);
        if null > max {
            max = null;
            holder = "<null_keyspace>".to_owned();
        }
        (max, holder)
    }

    fn set_global(
        &mut self,
        barrier_id: &str,
        ts: u64,
        ttl_seconds: i64,
        now_ms: u64,
    ) -> Result<Barrier, String> {
        let (max, holder) = self.max_txn_safe_point();
        if ts < max {
            return Err(format!(
                "[PD:gc:ErrGlobalGCBarrierTSBehindTxnSafePoint]trying to set a global GC barrier on ts {ts} which is already behind the txn safe point {max} of keyspace {holder}"
            ));
        }
        let barrier = Barrier::new(ts, ttl_seconds, now_ms);
        self.global.insert(barrier_id.to_owned(), barrier.clone());
        Ok(barrier)
    }

    fn state_proto(&self, id: u32, exclude_barriers: bool, now_ms: u64) -> pdpb::GcState {
        let state = self.state(id);
        let gc_barriers = if exclude_barriers {
            Vec::new()
        } else {
            state
                .barriers
                .iter()
                .map(|(bid, b)| b.info(bid, now_ms))
                .collect()
        };
        pdpb::GcState {
            keyspace_scope: Some(pdpb::KeyspaceScope {
                keyspace: Some(keyspace_scope::Keyspace::KeyspaceId(id)),
            }),
            is_keyspace_level_gc: id != NULL_KEYSPACE_ID,
            txn_safe_point: state.txn_safe_point,
            gc_safe_point: state.gc_safe_point,
            gc_barriers,
        }
    }

    fn global_protos(&self, now_ms: u64) -> Vec<pdpb::GlobalGcBarrierInfo> {
        self.global
            .iter()
            .map(|(bid, b)| b.global_info(bid, now_ms))
            .collect()
    }
}

/// An OK response with PD's `UNKNOWN` header carrying `message`.
fn gc_failure<R: crate::pd::PdResponse>(cluster_id: u64, message: &str) -> R {
    let mut resp = R::default();
    *resp.header_mut() = error_header(cluster_id, pdpb::ErrorType::Unknown, message);
    resp
}

/// A legacy call's failure: PD returns the error itself, which gRPC sends as `Unknown`.
fn legacy_failure(message: String) -> MockError {
    MockError::status(Code::Unknown, message)
}

impl Cluster {
    /// Creates keyspace `name` if it is new (PD's `CreateKeyspace`: the next id, unified GC)
    /// and returns its id. Like PD, it splits regions at the keyspace's raw and
    /// transactional boundaries (see [`Cluster::split_keyspace`]) when the stores speak API V2.
    pub fn create_keyspace(&mut self, name: &str) -> u32 {
        if let Some(id) = self.keyspace_id(name) {
            return id;
        }
        let id = self.gc.keyspaces.keys().max().map_or(0, |m| m + 1);
        self.register_keyspace_gc(id, name, false);
        if self.config.api != crate::ApiMode::V1 && self.config.api != crate::ApiMode::V1Ttl {
            self.split_keyspace(id);
        }
        id
    }

    /// The id of keyspace `name`, if it exists (PD's `LoadKeyspace`).
    pub fn keyspace_id(&self, name: &str) -> Option<u32> {
        self.gc
            .keyspaces
            .iter()
            .find(|(_, e)| e.name == name)
            .map(|(id, _)| *id)
    }

    /// Splits regions at keyspace `id`'s boundaries, as PD does when it creates a keyspace:
    /// the starts of its raw (`r` + id) and transactional (`x` + id) ranges and of the next
    /// keyspace's, memcomparable-encoded. Every region a keyspace's client sees then lies
    /// inside its keyspace or at its edge.
    pub fn split_keyspace(&mut self, id: u32) {
        for mode in [b'r', b'x'] {
            for at in [id, id + 1] {
                // The 3-byte big-endian id after the mode byte (ids are below 2^24).
                let mut key = vec![mode];
                key.extend_from_slice(&at.to_be_bytes()[1..]);
                // A keyspace boundary is never an invalid split key; ignoring the error
                // keeps creation infallible, as it is on PD.
                let _ = self.split_at(&crate::codec::encode_memcomparable(&key));
            }
        }
    }

    /// Registers a keyspace with the GC API (the keyspace service keeps names and ids; this
    /// says how the keyspace is garbage-collected). `keyspace_level_gc: false` is PD's
    /// default: the keyspace shares the null keyspace's GC state.
    pub fn register_keyspace_gc(&mut self, id: u32, name: &str, keyspace_level_gc: bool) {
        self.gc.keyspaces.insert(
            id,
            KeyspaceEntry {
                name: name.to_owned(),
                keyspace_level_gc,
            },
        );
    }

    /// The txn safe point and GC safe point of a keyspace as the user API sees it
    /// (`None`: the null keyspace), or `None` for an unknown keyspace.
    pub fn gc_safe_points(&self, keyspace_id: Option<u32>) -> Option<(u64, u64)> {
        let id = self
            .gc
            .resolve(keyspace_id.unwrap_or(NULL_KEYSPACE_ID), true)
            .ok()?;
        let s = self.gc.state(id);
        Some((s.txn_safe_point, s.gc_safe_point))
    }

    pub(crate) fn pd_get_gc_state(
        &mut self,
        req: pdpb::GetGcStateRequest,
        now_ms: u64,
    ) -> Result<pdpb::GetGcStateResponse, MockError> {
        let cid = self.config.cluster_id;
        let id = match self.gc.resolve(scope_id(req.keyspace_scope.as_ref()), true) {
            Ok(id) => id,
            Err(m) => return Ok(gc_failure(cid, &m)),
        };
        Ok(pdpb::GetGcStateResponse {
            header: ok_header(cid),
            gc_state: Some(self.gc.state_proto(id, req.exclude_gc_barriers, now_ms)),
            global_gc_barriers: req.include_global_gc_barriers.then(|| {
                pdpb::GlobalGcBarriersInfo {
                    barriers: self.gc.global_protos(now_ms),
                }
            }),
        })
    }

    pub(crate) fn pd_get_all_keyspaces_gc_states(
        &mut self,
        req: pdpb::GetAllKeyspacesGcStatesRequest,
        now_ms: u64,
    ) -> Result<pdpb::GetAllKeyspacesGcStatesResponse, MockError> {
        let exclude = req.exclude_gc_barriers;
        // PD builds a map (random order); the mock lists keyspaces by id, null keyspace last.
        let mut gc_states: Vec<pdpb::GcState> = self
            .gc
            .keyspaces
            .iter()
            .map(|(&id, entry)| {
                if entry.keyspace_level_gc {
                    self.gc.state_proto(id, exclude, now_ms)
                } else {
                    // Unified GC: PD reports the keyspace with zero safe points.
                    pdpb::GcState {
                        keyspace_scope: Some(pdpb::KeyspaceScope {
                            keyspace: Some(keyspace_scope::Keyspace::KeyspaceId(id)),
                        }),
                        ..Default::default()
                    }
                }
            })
            .collect();
        gc_states.push(self.gc.state_proto(NULL_KEYSPACE_ID, exclude, now_ms));
        let global_gc_barriers = if req.exclude_global_gc_barriers {
            Vec::new()
        } else {
            self.gc.global_protos(now_ms)
        };
        Ok(pdpb::GetAllKeyspacesGcStatesResponse {
            header: ok_header(self.config.cluster_id),
            gc_states,
            global_gc_barriers,
        })
    }

    pub(crate) fn pd_advance_txn_safe_point(
        &mut self,
        req: pdpb::AdvanceTxnSafePointRequest,
        now_ms: u64,
    ) -> Result<pdpb::AdvanceTxnSafePointResponse, MockError> {
        let cid = self.config.cluster_id;
        let result = self
            .gc
            .resolve(scope_id(req.keyspace_scope.as_ref()), false)
            .and_then(|id| self.gc.advance_txn(id, req.target, now_ms));
        Ok(match result {
            Ok(a) => pdpb::AdvanceTxnSafePointResponse {
                header: ok_header(cid),
                old_txn_safe_point: a.old,
                new_txn_safe_point: a.new,
                blocker_description: a.blocker_description,
            },
            Err(m) => gc_failure(cid, &m),
        })
    }

    pub(crate) fn pd_advance_gc_safe_point(
        &mut self,
        req: pdpb::AdvanceGcSafePointRequest,
        _now_ms: u64,
    ) -> Result<pdpb::AdvanceGcSafePointResponse, MockError> {
        let cid = self.config.cluster_id;
        let result = self
            .gc
            .resolve(scope_id(req.keyspace_scope.as_ref()), false)
            .and_then(|id| self.gc.advance_gc(id, req.target, false));
        Ok(match result {
            Ok((old, new)) => pdpb::AdvanceGcSafePointResponse {
                header: ok_header(cid),
                old_gc_safe_point: old,
                new_gc_safe_point: new,
            },
            Err(m) => gc_failure(cid, &m),
        })
    }

    pub(crate) fn pd_set_gc_barrier(
        &mut self,
        req: pdpb::SetGcBarrierRequest,
        now_ms: u64,
    ) -> Result<pdpb::SetGcBarrierResponse, MockError> {
        let cid = self.config.cluster_id;
        // PD checks the TTL before it even looks at the keyspace.
        let result = if req.ttl_seconds <= 0 {
            Err(invalid_ttl())
        } else {
            self.gc
                .resolve(scope_id(req.keyspace_scope.as_ref()), true)
                .and_then(|id| {
                    self.gc.set_barrier(
                        id,
                        &req.barrier_id,
                        req.barrier_ts,
                        req.ttl_seconds,
                        now_ms,
                    )
                })
        };
        Ok(match result {
            Ok(b) => pdpb::SetGcBarrierResponse {
                header: ok_header(cid),
                new_barrier_info: Some(b.info(&req.barrier_id, now_ms)),
            },
            Err(m) => gc_failure(cid, &m),
        })
    }

    pub(crate) fn pd_delete_gc_barrier(
        &mut self,
        req: pdpb::DeleteGcBarrierRequest,
        now_ms: u64,
    ) -> Result<pdpb::DeleteGcBarrierResponse, MockError> {
        let cid = self.config.cluster_id;
        let result = self
            .gc
            .resolve(scope_id(req.keyspace_scope.as_ref()), true)
            .and_then(|id| self.gc.delete_barrier(id, &req.barrier_id));
        Ok(match result {
            Ok(deleted) => pdpb::DeleteGcBarrierResponse {
                header: ok_header(cid),
                deleted_barrier_info: deleted.map(|b| b.info(&req.barrier_id, now_ms)),
            },
            Err(m) => gc_failure(cid, &m),
        })
    }

    pub(crate) fn pd_set_global_gc_barrier(
        &mut self,
        req: pdpb::SetGlobalGcBarrierRequest,
        now_ms: u64,
    ) -> Result<pdpb::SetGlobalGcBarrierResponse, MockError> {
        let cid = self.config.cluster_id;
        let result = if req.ttl_seconds <= 0 {
            Err(invalid_ttl())
        } else if req.barrier_id.is_empty() {
            Err(invalid_barrier_id())
        } else {
            self.gc
                .set_global(&req.barrier_id, req.barrier_ts, req.ttl_seconds, now_ms)
        };
        Ok(match result {
            Ok(b) => pdpb::SetGlobalGcBarrierResponse {
                header: ok_header(cid),
                new_barrier_info: Some(b.global_info(&req.barrier_id, now_ms)),
            },
            Err(m) => gc_failure(cid, &m),
        })
    }

    pub(crate) fn pd_delete_global_gc_barrier(
        &mut self,
        req: pdpb::DeleteGlobalGcBarrierRequest,
        now_ms: u64,
    ) -> Result<pdpb::DeleteGlobalGcBarrierResponse, MockError> {
        let cid = self.config.cluster_id;
        if req.barrier_id.is_empty() {
            return Ok(gc_failure(cid, &invalid_barrier_id()));
        }
        let deleted = self.gc.global.remove(&req.barrier_id);
        Ok(pdpb::DeleteGlobalGcBarrierResponse {
            header: ok_header(cid),
            deleted_barrier_info: deleted.map(|b| b.global_info(&req.barrier_id, now_ms)),
        })
    }

    /// Legacy: advances the null keyspace's GC safe point; a smaller value is ignored.
    pub(crate) fn pd_update_gc_safe_point(
        &mut self,
        req: pdpb::UpdateGcSafePointRequest,
        _now_ms: u64,
    ) -> Result<pdpb::UpdateGcSafePointResponse, MockError> {
        let (_, new) = self
            .gc
            .advance_gc(NULL_KEYSPACE_ID, req.safe_point, true)
            .map_err(legacy_failure)?;
        Ok(pdpb::UpdateGcSafePointResponse {
            header: ok_header(self.config.cluster_id),
            new_safe_point: new,
        })
    }

    /// Legacy: the null keyspace's GC safe point.
    pub(crate) fn pd_get_gc_safe_point(
        &mut self,
        _req: pdpb::GetGcSafePointRequest,
        _now_ms: u64,
    ) -> Result<pdpb::GetGcSafePointResponse, MockError> {
        Ok(pdpb::GetGcSafePointResponse {
            header: ok_header(self.config.cluster_id),
            safe_point: self.gc.state(NULL_KEYSPACE_ID).gc_safe_point,
        })
    }

    /// Legacy service safe points, mapped onto the new model as PD maps them: `gc_worker`
    /// advances the txn safe point, `native_br` is a global GC barrier, any other id is a GC
    /// barrier of the null keyspace (deleted when `ttl <= 0`). The answer always names the
    /// "minimum service safe point": the txn safe point, as `gc_worker` (or as the blocker
    /// that stopped `gc_worker`).
    pub(crate) fn pd_update_service_gc_safe_point(
        &mut self,
        req: pdpb::UpdateServiceGcSafePointRequest,
        now_ms: u64,
    ) -> Result<pdpb::UpdateServiceGcSafePointResponse, MockError> {
        // PD takes "now" from a fresh timestamp, not from its clock.
        let (physical, _) = self
            .tso
            .allocate(now_ms, 1)
            .map_err(|e| MockError::status(Code::Unknown, e.to_string()))?;
        let now_ms = u64::try_from(physical).unwrap_or(now_ms);
        let now_secs = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
        let service_id = String::from_utf8_lossy(&req.service_id).into_owned();
        let (min_id, min_safe_point) = if service_id == GC_WORKER {
            if req.ttl != i64::MAX {
                return Err(legacy_failure(
                    "TTL of gc_worker's service safe point must be infinity".to_owned(),
                ));
            }
            let a = self
                .gc
                .advance_txn(NULL_KEYSPACE_ID, req.safe_point, now_ms)
                .map_err(legacy_failure)?;
            match a.blocker_id {
                Some(blocker) if a.new != req.safe_point => (blocker, a.new),
                _ => (GC_WORKER.to_owned(), req.safe_point),
            }
        } else if service_id == NATIVE_BR {
            if req.ttl > 0 {
                // A barrier behind the txn safe point is simply not set; that is no error here.
                let _ = self
                    .gc
                    .set_global(NATIVE_BR, req.safe_point, req.ttl, now_ms);
            } else {
                self.gc.global.remove(NATIVE_BR);
            }
            (GC_WORKER.to_owned(), self.gc.max_txn_safe_point().0)
        } else {
            let result = if req.ttl > 0 {
                self.gc
                    .set_barrier(
                        NULL_KEYSPACE_ID,
                        &service_id,
                        req.safe_point,
                        req.ttl,
                        now_ms,
                    )
                    .map(|_| ())
            } else {
                self.gc
                    .delete_barrier(NULL_KEYSPACE_ID, &service_id)
                    .map(|_| ())
            };
            if let Err(m) = result {
                if !m.starts_with("[PD:gc:ErrGCBarrierTSBehindTxnSafePoint]") {
                    return Err(legacy_failure(m));
                }
            }
            (
                GC_WORKER.to_owned(),
                self.gc.state(NULL_KEYSPACE_ID).txn_safe_point,
            )
        };
        Ok(pdpb::UpdateServiceGcSafePointResponse {
            header: ok_header(self.config.cluster_id),
            service_id: min_id.into_bytes().into(),
            // The minimum never expires: PD reports "forever minus now" in seconds.
            ttl: i64::MAX - now_secs,
            min_safe_point,
        })
    }

    /// A fresh timestamp: without a separate TSO service, PD's minimum across the cluster
    /// is simply its own next timestamp.
    pub(crate) fn pd_get_min_ts(
        &mut self,
        _req: pdpb::GetMinTsRequest,
        now_ms: u64,
    ) -> Result<pdpb::GetMinTsResponse, MockError> {
        let (physical, logical) = self
            .tso
            .allocate(now_ms, 1)
            .map_err(|e| MockError::status(Code::Unknown, e.to_string()))?;
        Ok(pdpb::GetMinTsResponse {
            header: ok_header(self.config.cluster_id),
            timestamp: Some(pdpb::Timestamp {
                physical,
                logical,
                suffix_bits: 0,
            }),
        })
    }
}

/// PD's external timestamp (`server/grpc_service.go`, `server/server.go` `SetExternalTS`): a
/// timestamp an external system (e.g. a replication source) reports, never above PD's
/// current TSO and only moving forward; refusals are an `INVALID_VALUE` header.
impl Cluster {
    pub(crate) fn pd_set_external_timestamp(
        &mut self,
        req: pdpb::SetExternalTimestampRequest,
        now_ms: u64,
    ) -> Result<pdpb::SetExternalTimestampResponse, MockError> {
        let (physical, logical) = self
            .tso
            .allocate(now_ms, 1)
            .map_err(|e| MockError::status(Code::Unknown, e.to_string()))?;
        let global = ((physical as u64) << 18) | logical as u64;
        let refusal = if req.timestamp > global {
            Some("the external timestamp should not be larger than global ts")
        } else if req.timestamp <= self.gc.external_ts {
            Some("the external timestamp should be larger than current external timestamp")
        } else {
            None
        };
        let header = match refusal {
            Some(message) => error_header(
                self.config.cluster_id,
                pdpb::ErrorType::InvalidValue,
                message,
            ),
            None => {
                self.gc.external_ts = req.timestamp;
                ok_header(self.config.cluster_id)
            }
        };
        Ok(pdpb::SetExternalTimestampResponse { header })
    }

    pub(crate) fn pd_get_external_timestamp(
        &mut self,
        _req: pdpb::GetExternalTimestampRequest,
        _now_ms: u64,
    ) -> Result<pdpb::GetExternalTimestampResponse, MockError> {
        Ok(pdpb::GetExternalTimestampResponse {
            header: ok_header(self.config.cluster_id),
            timestamp: self.gc.external_ts,
        })
    }
}

#[cfg(test)]
mod tests;

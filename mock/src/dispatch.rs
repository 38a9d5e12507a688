//! Entry points for fronts: typed calls by method type, bytes-level calls by gRPC path, and
//! `BatchCommands` messages.
//!
//! A gRPC front decodes nothing itself: it hands the path and the message bytes to
//! [`Cluster::handle_tikv`] / [`Cluster::handle_pd`] and sends back the bytes or turns the
//! [`MockError`] into a status (or a dropped reply). An in-process front calls
//! [`Cluster::tikv`] / [`Cluster::pd`] with typed messages instead.

use bytes::Bytes;
use prost::Message;
use tikv_proto::kvrpcpb;
use tikv_proto::method::Method;
use tikv_proto::pdpb::pd_service;
use tikv_proto::tikvpb::batch_commands_request::request::Cmd as ReqCmd;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as RespCmd;
use tikv_proto::tikvpb::{
    BatchCommandsEmptyResponse, BatchCommandsRequest, BatchCommandsResponse,
    batch_commands_response, tikv_service,
};

use crate::cluster::Cluster;
use crate::error::{FailureKind, MockError};
use crate::pd::PdAdmission;
use crate::pd_members::LeaderRule;
use crate::txn::LockWaitOutcome;
use crate::txn::lock_wait::LockWaitId;

/// A TiKV method the mock serves.
pub trait TikvMethod: Method {
    /// Serves one request addressed to `store_id`.
    fn call(
        cluster: &mut Cluster,
        store_id: u64,
        request: Self::Request,
        now_ms: u64,
    ) -> Result<Self::Response, MockError>;
}

/// A PD method the mock serves.
pub trait PdMethod: Method {
    /// Serves one request (for `Tso`, one message of the stream) that reached PD member
    /// `member` (see [`Cluster::transfer_pd_leader`]).
    fn call(
        cluster: &mut Cluster,
        member: usize,
        request: Self::Request,
        now_ms: u64,
    ) -> Result<Self::Response, MockError>;
}

/// The method name of a gRPC path (`/tikvpb.Tikv/RawGet` → `RawGet`).
fn method_name(path: &'static str) -> &'static str {
    path.rsplit('/').next().unwrap_or(path)
}

fn decode_call<M: Method>(
    path: &str,
    body: Bytes,
    call: impl FnOnce(M::Request) -> Result<M::Response, MockError>,
) -> Result<Bytes, MockError> {
    let request = M::Request::decode(body).map_err(|e| MockError::undecodable(path, &e))?;
    Ok(Bytes::from(call(request)?.encode_to_vec()))
}

/// The TiKV command table: one line per method — its handler and, if TiKV also serves it
/// inside `BatchCommands`, the batch variant's name. Unary routing by path, the typed
/// [`TikvMethod`] calls and `BatchCommands` dispatch are all derived from it, so a command
/// is added in one place (and counted the same way whichever way it arrives).
macro_rules! tikv_methods {
    ($($method:ident => $handler:ident $(, batch $batch:ident)?;)*) => {
        $(
            impl TikvMethod for tikv_service::$method {
                fn call(
                    cluster: &mut Cluster,
                    store_id: u64,
                    request: Self::Request,
                    now_ms: u64,
                ) -> Result<Self::Response, MockError> {
                    cluster.serve(
                        store_id,
                        method_name(<Self as Method>::PATH),
                        request,
                        now_ms,
                        Cluster::$handler,
                    )
                }
            }
        )*

        fn route_tikv(
            cluster: &mut Cluster,
            store_id: u64,
            path: &str,
            body: Bytes,
            now_ms: u64,
        ) -> Result<Bytes, MockError> {
            $(
                if path == <tikv_service::$method as Method>::PATH {
                    return decode_call::<tikv_service::$method>(path, body, |r| {
                        <tikv_service::$method as TikvMethod>::call(cluster, store_id, r, now_ms)
                    });
                }
            )*
            Err(MockError::unimplemented(path))
        }

        /// One `BatchCommands` sub-request through the table; `Err(cmd)` for a variant the
        /// table has no batch entry for.
        fn route_batch(
            cluster: &mut Cluster,
            store_id: u64,
            cmd: ReqCmd,
            now_ms: u64,
        ) -> Result<Result<RespCmd, MockError>, Box<ReqCmd>> {
            match cmd {
                $($(
                    ReqCmd::$batch(r) => Ok(
                        <tikv_service::$method as TikvMethod>::call(cluster, store_id, r, now_ms)
                            .map(RespCmd::$batch),
                    ),
                )?)*
                other => Err(Box::new(other)),
            }
        }
    };
}

tikv_methods!(
    RawGet => raw_get, batch RawGet;
    RawBatchGet => raw_batch_get, batch RawBatchGet;
    RawPut => raw_put, batch RawPut;
    RawBatchPut => raw_batch_put, batch RawBatchPut;
    RawDelete => raw_delete, batch RawDelete;
    RawBatchDelete => raw_batch_delete, batch RawBatchDelete;
    RawDeleteRange => raw_delete_range, batch RawDeleteRange;
    RawScan => raw_scan, batch RawScan;
    RawBatchScan => raw_batch_scan, batch RawBatchScan;
    RawGetKeyTtl => raw_get_key_ttl;
    RawCompareAndSwap => raw_compare_and_swap;
    RawChecksum => raw_checksum;
    KvGet => kv_get, batch Get;
    KvBatchGet => kv_batch_get, batch BatchGet;
    KvScan => kv_scan, batch Scan;
    KvPrewrite => kv_prewrite, batch Prewrite;
    KvCommit => kv_commit, batch Commit;
    KvBatchRollback => kv_batch_rollback, batch BatchRollback;
    KvCleanup => kv_cleanup, batch Cleanup;
    KvCheckTxnStatus => kv_check_txn_status, batch CheckTxnStatus;
    KvCheckSecondaryLocks => kv_check_secondary_locks, batch CheckSecondaryLocks;
    KvResolveLock => kv_resolve_lock, batch ResolveLock;
    KvTxnHeartBeat => kv_txn_heart_beat, batch TxnHeartBeat;
    KvScanLock => kv_scan_lock, batch ScanLock;
    // Inside BatchCommands a lock request parks only through `handle_batch_commands_parking`;
    // through the table it answers as if its wait timed out.
    KvPessimisticLock => kv_pessimistic_lock, batch PessimisticLock;
    KvPessimisticRollback => kv_pessimistic_rollback, batch PessimisticRollback;
    KvDeleteRange => kv_delete_range, batch DeleteRange;
    KvPrepareFlashbackToVersion => kv_prepare_flashback_to_version, batch PrepareFlashbackToVersion;
    KvFlashbackToVersion => kv_flashback_to_version, batch FlashbackToVersion;
    KvFlush => kv_flush, batch Flush;
    KvBufferBatchGet => kv_buffer_batch_get, batch BufferBatchGet;
    BroadcastTxnStatus => broadcast_txn_status, batch BroadcastTxnStatus;
    GetHealthFeedback => get_health_feedback, batch GetHealthFeedback;
    MvccGetByKey => mvcc_get_by_key;
    MvccGetByStartTs => mvcc_get_by_start_ts;
    UnsafeDestroyRange => unsafe_destroy_range;
    SplitRegion => split_region_rpc;
    Coprocessor => coprocessor, batch Coprocessor;
    GetStoreSafeTs => get_store_safe_ts;
);

macro_rules! pd_methods {
    ($($method:ident => $handler:ident, $rule:ident, $check:expr, $header:expr),* $(,)?) => {
        $(
            impl PdMethod for pd_service::$method {
                fn call(
                    cluster: &mut Cluster,
                    member: usize,
                    request: Self::Request,
                    now_ms: u64,
                ) -> Result<Self::Response, MockError> {
                    cluster.serve_pd(
                        method_name(<Self as Method>::PATH),
                        request,
                        now_ms,
                        PdAdmission {
                            member,
                            rule: LeaderRule::$rule,
                            check_cluster_id: $check,
                            header: $header,
                        },
                        Cluster::$handler,
                    )
                }
            }
        )*

        fn route_pd(
            cluster: &mut Cluster,
            member: usize,
            path: &str,
            body: Bytes,
            now_ms: u64,
        ) -> Result<Bytes, MockError> {
            $(
                if path == <pd_service::$method as Method>::PATH {
                    return decode_call::<pd_service::$method>(path, body, |r| {
                        <pd_service::$method as PdMethod>::call(cluster, member, r, now_ms)
                    });
                }
            )*
            Err(MockError::unimplemented(path))
        }
    };
}

// kvproto gives `GetClusterInfoRequest` a *response* header; it is never checked anyway.
// `SplitRegions`, `ScatterRegion` and `GetOperator` look up the raft cluster before PD's
// middleware runs, so on a follower they answer before any leader or cluster-id check.
pd_methods!(
    GetMembers => pd_get_members, AnyMember, false, |r| r.header.as_ref(),
    GetClusterInfo => pd_get_cluster_info, AnyMember, false, |_| None,
    Tso => pd_tso, Tso, true, |r| r.header.as_ref(),
    GetRegion => pd_get_region, FollowerHandle, true, |r| r.header.as_ref(),
    GetPrevRegion => pd_get_prev_region, FollowerHandle, true, |r| r.header.as_ref(),
    GetRegionById => pd_get_region_by_id, FollowerHandle, true, |r| r.header.as_ref(),
    ScanRegions => pd_scan_regions, FollowerHandle, true, |r| r.header.as_ref(),
    BatchScanRegions => pd_batch_scan_regions, FollowerHandle, true, |r| r.header.as_ref(),
    GetStore => pd_get_store, Leader, true, |r| r.header.as_ref(),
    GetAllStores => pd_get_all_stores, Leader, true, |r| r.header.as_ref(),
    AllocId => pd_alloc_id, Leader, true, |r| r.header.as_ref(),
    GetMinTs => pd_get_min_ts, Leader, true, |r| r.header.as_ref(),
    SetExternalTimestamp => pd_set_external_timestamp, Leader, true, |r| r.header.as_ref(),
    GetExternalTimestamp => pd_get_external_timestamp, Leader, true, |r| r.header.as_ref(),
    SplitRegions => pd_split_regions, RaftCluster, true, |r| r.header.as_ref(),
    SplitAndScatterRegions => pd_split_and_scatter_regions, Leader, true, |r| r.header.as_ref(),
    ScatterRegion => pd_scatter_region, RaftCluster, true, |r| r.header.as_ref(),
    GetOperator => pd_get_operator, RaftCluster, true, |r| r.header.as_ref(),
    GetGcState => pd_get_gc_state, Leader, true, |r| r.header.as_ref(),
    GetAllKeyspacesGcStates => pd_get_all_keyspaces_gc_states, Leader, true, |r| r.header.as_ref(),
    AdvanceTxnSafePoint => pd_advance_txn_safe_point, Leader, true, |r| r.header.as_ref(),
    AdvanceGcSafePoint => pd_advance_gc_safe_point, Leader, true, |r| r.header.as_ref(),
    SetGcBarrier => pd_set_gc_barrier, Leader, true, |r| r.header.as_ref(),
    DeleteGcBarrier => pd_delete_gc_barrier, Leader, true, |r| r.header.as_ref(),
    SetGlobalGcBarrier => pd_set_global_gc_barrier, Leader, true, |r| r.header.as_ref(),
    DeleteGlobalGcBarrier => pd_delete_global_gc_barrier, Leader, true, |r| r.header.as_ref(),
    UpdateGcSafePoint => pd_update_gc_safe_point, Leader, true, |r| r.header.as_ref(),
    UpdateServiceGcSafePoint => pd_update_service_gc_safe_point, Leader, true, |r| r.header.as_ref(),
    GetGcSafePoint => pd_get_gc_safe_point, Leader, true, |r| r.header.as_ref(),
);

impl Cluster {
    /// Serves a typed TiKV request addressed to `store_id`.
    pub fn tikv<M: TikvMethod>(
        &mut self,
        store_id: u64,
        request: M::Request,
        now_ms: u64,
    ) -> Result<M::Response, MockError> {
        M::call(self, store_id, request, now_ms)
    }

    /// Serves a typed PD request sent to the PD leader.
    pub fn pd<M: PdMethod>(
        &mut self,
        request: M::Request,
        now_ms: u64,
    ) -> Result<M::Response, MockError> {
        let leader = self.pd_leader();
        M::call(self, leader, request, now_ms)
    }

    /// Serves a typed PD request sent to PD member `member`, leader or not.
    pub fn pd_on<M: PdMethod>(
        &mut self,
        member: usize,
        request: M::Request,
        now_ms: u64,
    ) -> Result<M::Response, MockError> {
        M::call(self, member, request, now_ms)
    }

    /// Serves one unary TiKV call given its gRPC path and encoded request.
    pub fn handle_tikv(
        &mut self,
        store_id: u64,
        path: &str,
        body: Bytes,
        now_ms: u64,
    ) -> Result<Bytes, MockError> {
        // KvGC always fails (see `txn::debug`), so it has no handler in the table.
        if path == <tikv_service::KvGc as Method>::PATH {
            return decode_call::<tikv_service::KvGc>(path, body, |r| {
                self.tikv::<tikv_service::KvGc>(store_id, r, now_ms)
            });
        }
        route_tikv(self, store_id, path, body, now_ms)
    }

    /// Serves one PD call (for the `Tso` stream: one request message) sent to the PD leader,
    /// given its gRPC path and encoded request.
    pub fn handle_pd(&mut self, path: &str, body: Bytes, now_ms: u64) -> Result<Bytes, MockError> {
        let leader = self.pd_leader();
        route_pd(self, leader, path, body, now_ms)
    }

    /// Serves one PD call that reached PD member `member`: a follower answers as PD's
    /// followers do (most calls fail with `Unavailable` "not leader"; `GetMembers` works).
    pub fn handle_pd_on(
        &mut self,
        member: usize,
        path: &str,
        body: Bytes,
        now_ms: u64,
    ) -> Result<Bytes, MockError> {
        route_pd(self, member, path, body, now_ms)
    }

    /// Serves one `BatchCommandsRequest` on a stream to `store_id`.
    ///
    /// Each sub-request gets the matching response variant under its request id. A
    /// sub-request whose reply is lost (injected `ReplyLost`) is applied and simply left out
    /// of the response. An `Err` means the whole stream fails, as TiKV fails it for a
    /// cluster-id mismatch; earlier sub-requests of the message may have been applied.
    /// Commands the mock does not serve yet get an empty response (TiKV's answer to a
    /// request without a command). A `Gc` gets no response at all, as from TiKV.
    pub fn handle_batch_commands(
        &mut self,
        store_id: u64,
        request: BatchCommandsRequest,
        now_ms: u64,
    ) -> Result<BatchCommandsResponse, MockError> {
        self.batch_commands(store_id, request, now_ms, None)
    }

    /// [`Cluster::handle_batch_commands`] for a front that can answer later: a
    /// `PessimisticLock` that has to wait for another transaction's lock parks (TiKV's
    /// `wait_timeout`) and is left out of the response; `parked` receives its request id
    /// and [`LockWaitId`], and its answer comes from [`Cluster::poll_lock_waits`].
    pub fn handle_batch_commands_parking(
        &mut self,
        store_id: u64,
        request: BatchCommandsRequest,
        now_ms: u64,
        parked: &mut Vec<(u64, LockWaitId)>,
    ) -> Result<BatchCommandsResponse, MockError> {
        self.batch_commands(store_id, request, now_ms, Some(parked))
    }

    fn batch_commands(
        &mut self,
        store_id: u64,
        request: BatchCommandsRequest,
        now_ms: u64,
        mut parked: Option<&mut Vec<(u64, LockWaitId)>>,
    ) -> Result<BatchCommandsResponse, MockError> {
        self.counters.batch_messages += 1;
        self.counters.batch_requests += request.requests.len() as u64;
        self.admit_store(store_id)?;
        let mut out = BatchCommandsResponse::default();
        for (req, id) in request.requests.into_iter().zip(request.request_ids) {
            let cmd = match (req.cmd, parked.as_deref_mut()) {
                (Some(ReqCmd::PessimisticLock(r)), Some(parked)) => {
                    match self.kv_pessimistic_lock_or_wait(store_id, r, now_ms) {
                        Ok(LockWaitOutcome::Done(r)) => Ok(Some(RespCmd::PessimisticLock(*r))),
                        Ok(LockWaitOutcome::Waiting(wait)) => {
                            parked.push((id, wait));
                            continue;
                        }
                        Err(e) => Err(e),
                    }
                }
                (Some(cmd), _) => self.batch_one(store_id, cmd, now_ms),
                (None, _) => Ok(None),
            };
            match cmd {
                Ok(cmd) => {
                    out.responses
                        .push(batch_commands_response::Response { cmd });
                    out.request_ids.push(id);
                }
                Err(e) if e.kind == FailureKind::ReplyLost => {}
                Err(e) => return Err(e),
            }
        }
        out.health_feedback = Some(self.health_feedback(store_id));
        Ok(out)
    }

    /// The store's health as TiKV reports it: a fresh sequence number, and the lowest slow
    /// score (the mock's stores are never slow).
    fn health_feedback(&mut self, store_id: u64) -> kvrpcpb::HealthFeedback {
        self.health_seq += 1;
        kvrpcpb::HealthFeedback {
            store_id,
            feedback_seq_no: self.health_seq,
            slow_score: 1,
        }
    }

    /// `GetHealthFeedback`: the store's health, asked for on its own (TiKV answers it
    /// without checking the context's region).
    pub(crate) fn get_health_feedback(
        &mut self,
        store_id: u64,
        _req: kvrpcpb::GetHealthFeedbackRequest,
        _now_ms: u64,
    ) -> kvrpcpb::GetHealthFeedbackResponse {
        kvrpcpb::GetHealthFeedbackResponse {
            region_error: None,
            health_feedback: Some(self.health_feedback(store_id)),
        }
    }

    fn batch_one(
        &mut self,
        store_id: u64,
        cmd: ReqCmd,
        now_ms: u64,
    ) -> Result<Option<RespCmd>, MockError> {
        let unrouted = match route_batch(self, store_id, cmd, now_ms) {
            Ok(answer) => return answer.map(Some),
            Err(cmd) => *cmd,
        };
        match unrouted {
            ReqCmd::Gc(_) => Err(crate::txn::gc_in_batch()),
            ReqCmd::Empty(r) => Ok(Some(RespCmd::Empty(BatchCommandsEmptyResponse {
                test_id: r.test_id,
            }))),
            // What TiKV serves and the mock does not (coprocessor, flashback, import): the
            // stream fails with UNIMPLEMENTED rather than answer with an empty response.
            other => Err(MockError::unimplemented(&format!(
                "BatchCommands {}",
                batch_variant_name(&other)
            ))),
        }
    }
}

/// The name of a `BatchCommands` request variant (`Coprocessor`), for errors.
fn batch_variant_name(cmd: &ReqCmd) -> String {
    let debug = format!("{cmd:?}");
    debug.split('(').next().unwrap_or("unknown").to_owned()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use prost::Message;
    use tikv_proto::kvrpcpb;
    use tikv_proto::method::Method;
    use tikv_proto::pdpb::{self, pd_service as p};
    use tikv_proto::tikvpb::batch_commands_request::{Request as BatchReq, request::Cmd as ReqCmd};
    use tikv_proto::tikvpb::batch_commands_response::response::Cmd as RespCmd;
    use tikv_proto::tikvpb::{BatchCommandsEmptyRequest, BatchCommandsRequest, tikv_service as t};

    use crate::error::{Code, FailureKind};
    use crate::fault::{FaultAction, FaultFilter};
    use crate::region_errors;
    use crate::test_util::{Harness, NOW, b};

    fn raw_get(
        h: &mut Harness,
        store: u64,
        ctx: kvrpcpb::Context,
        key: &str,
    ) -> kvrpcpb::RawGetResponse {
        h.c.tikv::<t::RawGet>(
            store,
            kvrpcpb::RawGetRequest {
                context: Some(ctx),
                key: b(key),
                ..Default::default()
            },
            NOW,
        )
        .unwrap()
    }

    #[test]
    fn bytes_level_call_round_trips() {
        let mut h = Harness::v1();
        let (store, ctx) = h.ctx(b"k");
        let put = kvrpcpb::RawPutRequest {
            context: Some(ctx.clone()),
            key: b("k"),
            value: b("v"),
            ..Default::default()
        };
        let out =
            h.c.handle_tikv(
                store,
                t::RawPut::PATH,
                Bytes::from(put.encode_to_vec()),
                NOW,
            )
            .unwrap();
        assert_eq!(
            kvrpcpb::RawPutResponse::decode(out).unwrap(),
            Default::default()
        );
        let get = kvrpcpb::RawGetRequest {
            context: Some(ctx),
            key: b("k"),
            ..Default::default()
        };
        let out =
            h.c.handle_tikv(
                store,
                t::RawGet::PATH,
                Bytes::from(get.encode_to_vec()),
                NOW,
            )
            .unwrap();
        assert_eq!(kvrpcpb::RawGetResponse::decode(out).unwrap().value, b("v"));
        let members =
            h.c.handle_pd(p::GetMembers::PATH, Bytes::new(), NOW)
                .unwrap();
        let members = pdpb::GetMembersResponse::decode(members).unwrap();
        assert_eq!(members.header.unwrap().cluster_id, h.c.cluster_id());
        assert_eq!(h.c.counters().rpcs_of("RawPut"), 1);
        assert_eq!(h.c.counters().rpcs_of("GetMembers"), 1);
    }

    #[test]
    fn unknown_path_is_unimplemented_and_garbage_is_invalid_argument() {
        let mut h = Harness::v1();
        let e =
            h.c.handle_tikv(1, "/tikvpb.Tikv/Nope", Bytes::new(), NOW)
                .unwrap_err();
        assert_eq!(e.code, Code::Unimplemented);
        let e =
            h.c.handle_pd("/pdpb.PD/Nope", Bytes::new(), NOW)
                .unwrap_err();
        assert_eq!(e.code, Code::Unimplemented);
        let e =
            h.c.handle_tikv(
                1,
                t::RawGet::PATH,
                Bytes::from_static(&[0xFF, 0xFF, 0xFF]),
                NOW,
            )
            .unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument);
    }

    #[test]
    fn missing_context_gets_store_not_match_not_a_panic() {
        let mut h = Harness::v1();
        let out =
            h.c.handle_tikv(1, t::RawGet::PATH, Bytes::new(), NOW)
                .unwrap();
        let r = kvrpcpb::RawGetResponse::decode(out).unwrap();
        assert!(r.region_error.unwrap().store_not_match.is_some());
    }

    #[test]
    fn down_store_is_unreachable_and_comes_back() {
        let mut h = Harness::v1();
        let (store, ctx) = h.ctx(b"k");
        h.c.store_down(store).unwrap();
        let e =
            h.c.tikv::<t::RawGet>(
                store,
                kvrpcpb::RawGetRequest {
                    context: Some(ctx.clone()),
                    ..Default::default()
                },
                NOW,
            )
            .unwrap_err();
        assert_eq!(
            (e.code, e.kind),
            (Code::Unavailable, FailureKind::Unreachable)
        );
        h.c.store_up(store).unwrap();
        assert!(raw_get(&mut h, store, ctx, "k").not_found);
    }

    #[test]
    fn tikv_rejects_other_cluster_id_with_invalid_argument() {
        let mut h = Harness::v1();
        let (store, mut ctx) = h.ctx(b"k");
        ctx.cluster_id = 42;
        let e =
            h.c.tikv::<t::RawGet>(
                store,
                kvrpcpb::RawGetRequest {
                    context: Some(ctx),
                    ..Default::default()
                },
                NOW,
            )
            .unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument);
        assert_eq!(
            e.message,
            "the cluster id of the request does not match the TiKV cluster"
        );
    }

    #[test]
    fn epoch_not_match_after_split_through_handler() {
        let mut h = Harness::v1();
        let (store, ctx) = h.ctx(b"z");
        let left = h.c.split_region(ctx.region_id, &[b("m")]).unwrap()[0];
        let r = raw_get(&mut h, store, ctx.clone(), "z");
        let e = r.region_error.unwrap().epoch_not_match.unwrap();
        let ids: Vec<u64> = e.current_regions.iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![ctx.region_id, left]);
    }

    #[test]
    fn not_leader_after_transfer_through_handler() {
        let mut h = Harness::v1();
        let (store, ctx) = h.ctx(b"k");
        h.c.transfer_leader(ctx.region_id, 3).unwrap();
        let r = raw_get(&mut h, store, ctx, "k");
        let nl = r.region_error.unwrap().not_leader.unwrap();
        assert_eq!(nl.leader.unwrap().store_id, 3);
        let (store, ctx) = h.ctx(b"k");
        assert_eq!(store, 3);
        assert!(raw_get(&mut h, store, ctx, "k").region_error.is_none());
    }

    #[test]
    fn injected_region_error_fires_n_times_then_stops() {
        let mut h = Harness::v1();
        let (store, ctx) = h.ctx(b"k");
        h.c.inject_fault(
            FaultFilter::any().method("RawGet").store(store),
            FaultAction::RegionError(Box::new(region_errors::server_is_busy("injected", 10))),
            2,
        );
        for _ in 0..2 {
            let r = raw_get(&mut h, store, ctx.clone(), "k");
            assert_eq!(
                r.region_error.unwrap().server_is_busy.unwrap().backoff_ms,
                10
            );
        }
        assert!(raw_get(&mut h, store, ctx, "k").region_error.is_none());
    }

    #[test]
    fn reply_lost_applies_the_write_but_fails_the_call() {
        let mut h = Harness::v1();
        let (store, ctx) = h.ctx(b"k");
        h.c.inject_fault(
            FaultFilter::any().method("RawPut"),
            FaultAction::ReplyLost,
            1,
        );
        let e =
            h.c.tikv::<t::RawPut>(
                store,
                kvrpcpb::RawPutRequest {
                    context: Some(ctx.clone()),
                    key: b("k"),
                    value: b("v"),
                    ..Default::default()
                },
                NOW,
            )
            .unwrap_err();
        assert_eq!(e.kind, FailureKind::ReplyLost);
        assert_eq!(raw_get(&mut h, store, ctx, "k").value, b("v"));
    }

    #[test]
    fn injected_unreachable_applies_nothing() {
        let mut h = Harness::v1();
        let (store, ctx) = h.ctx(b"k");
        h.c.inject_fault(
            FaultFilter::any().region(ctx.region_id),
            FaultAction::Unreachable,
            1,
        );
        let e =
            h.c.tikv::<t::RawPut>(
                store,
                kvrpcpb::RawPutRequest {
                    context: Some(ctx.clone()),
                    key: b("k"),
                    value: b("v"),
                    ..Default::default()
                },
                NOW,
            )
            .unwrap_err();
        assert_eq!(e.kind, FailureKind::Unreachable);
        assert!(raw_get(&mut h, store, ctx, "k").not_found);
    }

    #[test]
    fn pd_faults_fail_pd_calls() {
        let mut h = Harness::v1();
        h.c.inject_fault(
            FaultFilter::any().method("GetMembers"),
            FaultAction::Status(Code::Unavailable, "not leader".into()),
            1,
        );
        let e =
            h.c.pd::<p::GetMembers>(Default::default(), NOW)
                .unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (Code::Unavailable, "not leader")
        );
        assert!(h.c.pd::<p::GetMembers>(Default::default(), NOW).is_ok());
    }

    #[test]
    fn batch_commands_answer_each_request_with_matching_variant_and_id() {
        let mut h = Harness::v1();
        let (store, ctx) = h.ctx(b"k");
        let put = ReqCmd::RawPut(kvrpcpb::RawPutRequest {
            context: Some(ctx.clone()),
            key: b("k"),
            value: b("v"),
            ..Default::default()
        });
        let get = ReqCmd::RawGet(kvrpcpb::RawGetRequest {
            context: Some(ctx),
            key: b("k"),
            ..Default::default()
        });
        let empty = ReqCmd::Empty(BatchCommandsEmptyRequest {
            test_id: 77,
            delay_time: 0,
        });
        let req = BatchCommandsRequest {
            requests: vec![
                BatchReq { cmd: Some(put) },
                BatchReq { cmd: Some(get) },
                BatchReq { cmd: Some(empty) },
                BatchReq { cmd: None },
            ],
            request_ids: vec![10, 11, 12, 13],
            ..Default::default()
        };
        let resp = h.c.handle_batch_commands(store, req, NOW).unwrap();
        assert_eq!(resp.request_ids, vec![10, 11, 12, 13]);
        assert!(matches!(resp.responses[0].cmd, Some(RespCmd::RawPut(_))));
        match &resp.responses[1].cmd {
            Some(RespCmd::RawGet(g)) => assert_eq!(g.value, b("v")),
            other => panic!("unexpected {other:?}"),
        }
        match &resp.responses[2].cmd {
            Some(RespCmd::Empty(e)) => assert_eq!(e.test_id, 77),
            other => panic!("unexpected {other:?}"),
        }
        assert!(resp.responses[3].cmd.is_none());
        assert_eq!(resp.health_feedback.unwrap().store_id, store);
        assert_eq!(h.c.counters().batch_requests, 4);
    }

    #[test]
    fn batch_commands_drop_lost_replies_and_fail_on_cluster_id_mismatch() {
        let mut h = Harness::v1();
        let (store, ctx) = h.ctx(b"k");
        h.c.inject_fault(
            FaultFilter::any().method("RawPut"),
            FaultAction::ReplyLost,
            1,
        );
        let put = |ctx: &kvrpcpb::Context| {
            ReqCmd::RawPut(kvrpcpb::RawPutRequest {
                context: Some(ctx.clone()),
                key: b("k"),
                value: b("v"),
                ..Default::default()
            })
        };
        let req = BatchCommandsRequest {
            requests: vec![
                BatchReq {
                    cmd: Some(put(&ctx)),
                },
                BatchReq {
                    cmd: Some(put(&ctx)),
                },
            ],
            request_ids: vec![1, 2],
            ..Default::default()
        };
        let resp = h.c.handle_batch_commands(store, req, NOW).unwrap();
        assert_eq!(resp.request_ids, vec![2]);
        let mut bad = ctx;
        bad.cluster_id = 5;
        let req = BatchCommandsRequest {
            requests: vec![BatchReq {
                cmd: Some(put(&bad)),
            }],
            request_ids: vec![3],
            ..Default::default()
        };
        let e = h.c.handle_batch_commands(store, req, NOW).unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument);
    }

    #[test]
    fn health_feedback_is_served_alone_and_in_batches_with_fresh_sequence_numbers() {
        let mut h = Harness::v1();
        let (store, ctx) = h.ctx(b"k");
        let unary =
            h.c.tikv::<t::GetHealthFeedback>(
                store,
                kvrpcpb::GetHealthFeedbackRequest {
                    context: Some(ctx.clone()),
                },
                NOW,
            )
            .unwrap()
            .health_feedback
            .unwrap();
        assert_eq!((unary.store_id, unary.slow_score), (store, 1));
        let req = BatchCommandsRequest {
            requests: vec![BatchReq {
                cmd: Some(ReqCmd::GetHealthFeedback(
                    kvrpcpb::GetHealthFeedbackRequest { context: Some(ctx) },
                )),
            }],
            request_ids: vec![1],
            ..Default::default()
        };
        let resp = h.c.handle_batch_commands(store, req, NOW).unwrap();
        let Some(RespCmd::GetHealthFeedback(batched)) = &resp.responses[0].cmd else {
            panic!("unexpected {:?}", resp.responses[0].cmd);
        };
        let batched = batched.health_feedback.unwrap();
        assert!(batched.feedback_seq_no > unary.feedback_seq_no);
        assert_eq!(h.c.counters().rpcs_of("GetHealthFeedback"), 2);
    }

    #[test]
    fn a_batch_command_the_mock_does_not_serve_fails_as_unimplemented_never_empty() {
        let mut h = Harness::v1();
        let (store, _) = h.ctx(b"k");
        let req = BatchCommandsRequest {
            requests: vec![BatchReq {
                cmd: Some(ReqCmd::RawCoprocessor(Default::default())),
            }],
            request_ids: vec![1],
            ..Default::default()
        };
        let e = h.c.handle_batch_commands(store, req, NOW).unwrap_err();
        assert_eq!(e.code, Code::Unimplemented);
        assert!(e.message.contains("RawCoprocessor"), "{}", e.message);
    }
}

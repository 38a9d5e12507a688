//! The mock cluster: topology, data, TSO, faults and counters behind one value, and the
//! admission pipeline every TiKV request goes through before its handler.

use bytes::Bytes;
use tikv_proto::kvrpcpb::Context;
use tikv_proto::{errorpb, kvrpcpb};

use crate::config::ClusterConfig;
use crate::counters::Counters;
use crate::error::{Code, MockError};
use crate::fault::{FaultAction, FaultFilter, FaultId, Faults, failure_of};
use crate::gc::GcStates;
use crate::pd_members::PdMembers;
use crate::raw::store::RawStore;
use crate::rng::SplitMix64;
use crate::scheduling::Operators;
use crate::topology::{Liveness, Topology, TopologyError};
use crate::tso::Tso;
use crate::txn::TxnEngine;

/// A whole mock cluster: one PD and its TiKV stores, driven by calls and an injected clock.
///
/// Every method is synchronous and deterministic: the same calls with the same `now_ms`
/// values (milliseconds since the Unix epoch) and the same seed produce the same results.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub(crate) config: ClusterConfig,
    pub(crate) topology: Topology,
    pub(crate) raw: RawStore,
    pub(crate) txn: TxnEngine,
    pub(crate) tso: Tso,
    pub(crate) faults: Faults,
    pub(crate) counters: Counters,
    pub(crate) rng: SplitMix64,
    pub(crate) pd_members: PdMembers,
    pub(crate) gc: GcStates,
    pub(crate) operators: Operators,
    pub(crate) health_seq: u64,
}

/// A request that carries a `kvrpcpb::Context`.
pub trait HasContext {
    /// The request's context, if set.
    fn context(&self) -> Option<&Context>;
}

/// A response with a `region_error` field.
pub trait RegionErrorResponse: Default {
    /// A response carrying only this region error.
    fn from_region_error(err: errorpb::Error) -> Self;
}

macro_rules! context_messages {
    ($($req:ident => $resp:ident),* $(,)?) => {
        $(
            impl HasContext for kvrpcpb::$req {
                fn context(&self) -> Option<&Context> {
                    self.context.as_ref()
                }
            }
            impl RegionErrorResponse for kvrpcpb::$resp {
                fn from_region_error(err: errorpb::Error) -> Self {
                    kvrpcpb::$resp {
                        region_error: Some(Box::new(err)),
                        ..Default::default()
                    }
                }
            }
        )*
    };
}

context_messages!(
    RawGetRequest => RawGetResponse,
    RawBatchGetRequest => RawBatchGetResponse,
    RawPutRequest => RawPutResponse,
    RawBatchPutRequest => RawBatchPutResponse,
    RawDeleteRequest => RawDeleteResponse,
    RawBatchDeleteRequest => RawBatchDeleteResponse,
    RawDeleteRangeRequest => RawDeleteRangeResponse,
    RawScanRequest => RawScanResponse,
    RawBatchScanRequest => RawBatchScanResponse,
    RawCasRequest => RawCasResponse,
    RawGetKeyTtlRequest => RawGetKeyTtlResponse,
    RawChecksumRequest => RawChecksumResponse,
    GetRequest => GetResponse,
    BatchGetRequest => BatchGetResponse,
    ScanRequest => ScanResponse,
    PrewriteRequest => PrewriteResponse,
    CommitRequest => CommitResponse,
    BatchRollbackRequest => BatchRollbackResponse,
    CleanupRequest => CleanupResponse,
    CheckTxnStatusRequest => CheckTxnStatusResponse,
    CheckSecondaryLocksRequest => CheckSecondaryLocksResponse,
    ResolveLockRequest => ResolveLockResponse,
    TxnHeartBeatRequest => TxnHeartBeatResponse,
    ScanLockRequest => ScanLockResponse,
    PessimisticLockRequest => PessimisticLockResponse,
    PessimisticRollbackRequest => PessimisticRollbackResponse,
    DeleteRangeRequest => DeleteRangeResponse,
    GetHealthFeedbackRequest => GetHealthFeedbackResponse,
);

impl Cluster {
    /// A freshly bootstrapped cluster: `config.stores` stores and one region over all keys.
    pub fn new(config: ClusterConfig) -> Self {
        let topology = Topology::bootstrap(config.stores, config.replicas, &config.store_version);
        let pd_members = PdMembers::new(config.pd_members);
        Cluster {
            rng: SplitMix64::new(config.seed),
            config,
            topology,
            raw: RawStore::default(),
            txn: TxnEngine::default(),
            tso: Tso::default(),
            faults: Faults::default(),
            counters: Counters::default(),
            pd_members,
            gc: GcStates::default(),
            operators: Operators::default(),
            health_seq: 0,
        }
    }

    /// The configuration the cluster was built with.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The PD cluster id.
    pub fn cluster_id(&self) -> u64 {
        self.config.cluster_id
    }

    /// The current topology (read-only; change it with the methods below).
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Request counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The cluster's seeded random generator (for callers choosing faults or split keys).
    pub fn rng(&mut self) -> &mut SplitMix64 {
        &mut self.rng
    }

    /// The URLs `GetMembers` reports for PD member 0 (a front sets its listen address); see
    /// [`Self::set_pd_member_client_urls`] for the other members.
    pub fn set_pd_client_urls(&mut self, urls: Vec<String>) {
        // Member 0 always exists.
        let _ = self.set_pd_member_client_urls(0, urls);
    }

    /// Sets the address PD reports for a store (a front sets its listen address).
    pub fn set_store_address(
        &mut self,
        store_id: u64,
        address: String,
    ) -> Result<(), TopologyError> {
        self.topology.set_store_address(store_id, address)
    }

    /// Adds a store with labels; returns its id.
    pub fn add_store(&mut self, labels: Vec<(String, String)>) -> u64 {
        let version = self.config.store_version.clone();
        self.topology.add_store(labels, &version)
    }

    /// Replaces a store's labels (zone, host, ...).
    pub fn set_store_labels(
        &mut self,
        store_id: u64,
        labels: Vec<(String, String)>,
    ) -> Result<(), TopologyError> {
        self.topology.set_store_labels(store_id, labels)
    }

    /// Removes an empty store (it becomes a tombstone).
    pub fn remove_store(&mut self, store_id: u64) -> Result<(), TopologyError> {
        self.topology.remove_store(store_id)
    }

    /// Takes a store down: every request to it fails as unreachable until [`Self::store_up`].
    pub fn store_down(&mut self, store_id: u64) -> Result<(), TopologyError> {
        self.topology.set_liveness(store_id, Liveness::Down)
    }

    /// Brings a store back.
    pub fn store_up(&mut self, store_id: u64) -> Result<(), TopologyError> {
        self.topology.set_liveness(store_id, Liveness::Up)
    }

    /// Splits a region at region-space keys; returns the new (left-side) region ids.
    pub fn split_region(
        &mut self,
        region_id: u64,
        keys: &[Bytes],
    ) -> Result<Vec<u64>, TopologyError> {
        self.topology.split(region_id, keys)
    }

    /// Makes a region start at `key` (region key space), splitting if needed.
    pub fn split_at(&mut self, key: &[u8]) -> Result<u64, TopologyError> {
        self.topology.split_at(key)
    }

    /// Merges `source` into its neighbour `target`.
    pub fn merge_regions(&mut self, source: u64, target: u64) -> Result<(), TopologyError> {
        self.topology.merge(source, target)
    }

    /// Moves a region's leader to its peer on `store_id`.
    pub fn transfer_leader(&mut self, region_id: u64, store_id: u64) -> Result<(), TopologyError> {
        self.topology.transfer_leader(region_id, store_id)
    }

    /// Adds a peer of the region on `store_id`; returns the peer id.
    pub fn add_peer(&mut self, region_id: u64, store_id: u64) -> Result<u64, TopologyError> {
        self.topology.add_peer(region_id, store_id)
    }

    /// Removes the region's (non-leader) peer on `store_id`.
    pub fn remove_peer(&mut self, region_id: u64, store_id: u64) -> Result<(), TopologyError> {
        self.topology.remove_peer(region_id, store_id)
    }

    /// Makes the next `times` requests matching `filter` fail with `action`.
    pub fn inject_fault(
        &mut self,
        filter: FaultFilter,
        action: FaultAction,
        times: u64,
    ) -> FaultId {
        self.faults.add(filter, action, times)
    }

    /// Removes an injected fault early.
    pub fn remove_fault(&mut self, id: FaultId) -> bool {
        self.faults.remove(id)
    }

    /// Removes all injected faults.
    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    /// The admission pipeline of a TiKV request, then its handler:
    /// store reachable → cluster id (a gRPC error, as TiKV's service rejects it before
    /// storage) → injected faults → handler.
    pub(crate) fn serve<Req: HasContext, Resp: RegionErrorResponse>(
        &mut self,
        store_id: u64,
        method: &str,
        req: Req,
        now_ms: u64,
        handler: fn(&mut Cluster, u64, Req, u64) -> Resp,
    ) -> Result<Resp, MockError> {
        self.counters.rpc(method);
        self.admit_store(store_id)?;
        let (cluster_id, region_id) = req
            .context()
            .map_or((0, None), |c| (c.cluster_id, Some(c.region_id)));
        if cluster_id > 0 && cluster_id != self.config.cluster_id {
            return Err(MockError::status(
                Code::InvalidArgument,
                "the cluster id of the request does not match the TiKV cluster",
            ));
        }
        match self.faults.take(Some(store_id), method, region_id) {
            None => Ok(handler(self, store_id, req, now_ms)),
            Some(FaultAction::RegionError(e)) => Ok(Resp::from_region_error(*e)),
            Some(FaultAction::ReplyLost) => {
                let _applied = handler(self, store_id, req, now_ms);
                Err(MockError::reply_lost())
            }
            Some(other) => {
                Err(failure_of(&other).unwrap_or_else(|| MockError::unreachable("injected fault")))
            }
        }
    }

    /// Fails unless the store exists and is serving.
    pub(crate) fn admit_store(&self, store_id: u64) -> Result<(), MockError> {
        match self.topology.store(store_id) {
            Some(s) if s.is_serving() => Ok(()),
            Some(_) => Err(MockError::unreachable(format!(
                "store {store_id} is unreachable"
            ))),
            None => Err(MockError::unreachable(format!(
                "store {store_id} does not exist"
            ))),
        }
    }
}

//! Operator calls on a [`TransactionClient`]: split and scatter regions, delete and destroy
//! ranges, MVCC debug views (client-go's `KVStore.SplitRegions`, `WaitScatterRegionFinish`,
//! `DeleteRange`, `UnsafeDestroyRange`, and `tikvrpc`'s MVCC commands). The protocol steps
//! are `tikv_core::{split, range_ops, mvcc}` machines; the PD calls and their retries are
//! here.

use std::sync::Arc;
use std::time::Duration;

use tikv_core::backoff::{BackoffKind, Backoffer, budget};
use tikv_core::coprocessor::{CopResponse, Coprocessor};
use tikv_core::flashback::{FlashbackPhase, flashback};
use tikv_core::machine::Budgeted;
use tikv_core::mvcc::{MvccByKey, MvccByStartTs, MvccInfo};
use tikv_core::pd::PdErrorKind;
use tikv_core::range_ops::{DestroyRange, delete_range};
use tikv_core::raw::Checksum;
use tikv_core::split::{ScatterOptions, ScatterProgress, SplitRegions, scatter_progress};
use tikv_core::{Error, Key, KeyRange, RegionId, TikvRequest, TikvResponse, Timestamp};
use tikv_proto::pdpb::{self, pd_service as pd};
use tikv_proto::{kvrpcpb, tipb};
use tracing::{debug, warn};

use crate::executor::{ClientContext, run};
use crate::runtime::Runtime;
use crate::txn::TransactionClient;

/// What a flashback did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlashbackReport {
    /// The flashback's start timestamp (its locks').
    pub start_ts: Timestamp,
    /// The timestamp its rewrites were committed at: reads at or after it see the range as
    /// it was at the version.
    pub commit_ts: Timestamp,
    /// Regions prepared and flashed back.
    pub regions: usize,
}

/// TiKV's coprocessor request type of a checksum.
const CHECKSUM_TP: i64 = 105;

/// Labels that mark a TiFlash store (no TiKV RPCs go there).
fn is_tiflash(store: &tikv_core::Store) -> bool {
    store
        .labels
        .iter()
        .any(|(k, v)| k == "engine" && (v == "tiflash" || v == "tiflash_compute"))
}

impl<R: Runtime> ClientContext<R> {
    /// Sleeps as `backoff` says after `error`, or returns the exhaustion error.
    async fn back_off(
        &self,
        backoff: &mut Backoffer,
        kind: BackoffKind,
        error: &Error,
    ) -> Result<(), Error> {
        let mut rng = self.rng.fork();
        let sleep = backoff.next_sleep(kind, error, &mut rng)?;
        self.runtime.sleep(sleep).await;
        Ok(())
    }

    async fn scatter(
        &self,
        regions: &[RegionId],
        options: &ScatterOptions,
        backoff: &mut Backoffer,
    ) -> Result<(), Error> {
        loop {
            let request = options.request(regions);
            match self.pd.call::<pd::ScatterRegion>(request).await {
                Ok(_) => return Ok(()),
                Err(e)
                    if matches!(
                        &e,
                        Error::Pd {
                            kind: PdErrorKind::Refused,
                            ..
                        }
                    ) =>
                {
                    return Err(e);
                }
                Err(e) => {
                    debug!(error = %e, ?regions, "scatter failed, retrying");
                    self.back_off(backoff, BackoffKind::PdRpc, &e).await?;
                }
            }
        }
    }

    /// One `GetOperator` read: `Ok(None)` when PD has no operator for the region (a
    /// `REGION_NOT_FOUND` header), which counts as finished.
    async fn operator(&self, region: RegionId) -> Result<Option<pdpb::GetOperatorResponse>, Error> {
        let request = pdpb::GetOperatorRequest {
            region_id: region,
            ..Default::default()
        };
        match self.pd.call::<pd::GetOperator>(request).await {
            Ok(r) => Ok(Some(r)),
            Err(Error::Pd {
                kind: PdErrorKind::Header(_),
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl<R: Runtime> TransactionClient<R> {
    fn context(&self) -> &Arc<ClientContext<R>> {
        &self.ctx
    }

    /// Splits the regions holding `keys` so that each key starts a region (TiKV's
    /// `SplitRegion`, as client-go does); returns the new regions' ids. Keys that already
    /// start a region are skipped. With `scatter`, PD then spreads each new region over the
    /// stores (not waited for: see
    /// [`wait_scatter_region_finish`](Self::wait_scatter_region_finish)); a scatter that fails
    /// fails the call, the split stays done.
    pub async fn split_regions(
        &self,
        keys: impl IntoIterator<Item = impl Into<Key>>,
        scatter: Option<ScatterOptions>,
    ) -> Result<Vec<RegionId>, Error> {
        let ctx = self.context();
        let codec = ctx.config.keyspace_codec();
        let keys: Vec<Key> = keys.into_iter().map(|k| codec.encode(k.into())).collect();
        if keys.iter().any(Key::is_empty) {
            return Err(Error::InvalidArgument(
                "a split key must not be empty".into(),
            ));
        }
        let per_key =
            budget::SPLIT_PER_KEY.saturating_mul(u32::try_from(keys.len()).unwrap_or(u32::MAX));
        let budget = ctx.config.budget(per_key.min(budget::SPLIT_MAX));
        let backoff = Backoffer::new("split regions", budget);
        let regions = run(ctx, Budgeted::new(backoff, SplitRegions::new(keys, false))).await?;
        if let Some(options) = scatter {
            let mut backoff = Backoffer::new("scatter regions", budget);
            for region in &regions {
                ctx.scatter(&[*region], &options, &mut backoff).await?;
            }
        }
        Ok(regions)
    }

    /// Asks PD to scatter `regions` (PD's `ScatterRegion`), retrying while PD cannot be
    /// reached; returns once PD has taken the request, not once the moves are done.
    pub async fn scatter_regions(
        &self,
        regions: &[RegionId],
        options: &ScatterOptions,
    ) -> Result<(), Error> {
        if regions.is_empty() {
            return Ok(());
        }
        let ctx = self.context();
        let mut backoff = Backoffer::new("scatter regions", ctx.config.budget(budget::SPLIT_MAX));
        ctx.scatter(regions, options, &mut backoff).await
    }

    /// Waits until PD's scatter of `region` is over (its operator is no longer a running
    /// `scatter-region`: done, timed out, cancelled, or none), polling with backoff for at
    /// most `timeout` (client-go's default: 120 s).
    pub async fn wait_scatter_region_finish(
        &self,
        region: RegionId,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        let ctx = self.context();
        let budget = timeout.unwrap_or(budget::SCATTER_WAIT);
        let mut backoff = Backoffer::new("wait for scatter", budget);
        loop {
            let error = match ctx.operator(region).await {
                Ok(None) => return Ok(()),
                Ok(Some(op)) if scatter_progress(&op) == ScatterProgress::Finished => {
                    return Ok(());
                }
                Ok(Some(_)) => Error::Region {
                    region: tikv_core::RegionVerId {
                        id: region,
                        conf_ver: 0,
                        version: 0,
                    },
                    message: "still scattering".into(),
                },
                Err(e) => e,
            };
            ctx.back_off(&mut backoff, BackoffKind::RegionMiss, &error)
                .await?;
        }
    }

    /// Whether PD is scattering `region` right now.
    pub async fn is_region_scattering(&self, region: RegionId) -> Result<bool, Error> {
        let op = self.context().operator(region).await?;
        Ok(op.is_some_and(|op| scatter_progress(&op) == ScatterProgress::Running))
    }

    /// Deletes every key in `range` (user keys; every version, no MVCC: what TiDB does to
    /// dropped tables once GC allows), region by region with `concurrency` range tasks at a
    /// time; returns how many regions were done.
    pub async fn delete_range(
        &self,
        range: impl Into<KeyRange>,
        concurrency: usize,
    ) -> Result<usize, Error> {
        self.run_delete_range(range.into(), concurrency, false)
            .await
    }

    /// Announces a deletion of `range` to observers (TiFlash, CDC) without deleting
    /// (`DeleteRange` with `notify_only`).
    pub async fn notify_delete_range(
        &self,
        range: impl Into<KeyRange>,
        concurrency: usize,
    ) -> Result<usize, Error> {
        self.run_delete_range(range.into(), concurrency, true).await
    }

    async fn run_delete_range(
        &self,
        range: KeyRange,
        concurrency: usize,
        notify_only: bool,
    ) -> Result<usize, Error> {
        if range.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "empty or inverted range {range}"
            )));
        }
        let ctx = self.context();
        let range = ctx.config.keyspace_codec().encode_range(range);
        let done = ctx
            .run_range_tasks(range, concurrency, |task| {
                let ctx = ctx.clone();
                async move {
                    let backoff = Backoffer::new(
                        "delete range",
                        ctx.config.budget(budget::DELETE_RANGE_REGION),
                    );
                    run(
                        &ctx,
                        Budgeted::new(backoff, delete_range(task, notify_only)),
                    )
                    .await
                }
            })
            .await?;
        Ok(done.into_iter().sum())
    }

    /// Drops `range` (user keys, both ends bounded) from every TiKV store's engine at once,
    /// bypassing raft and MVCC (client-go's `UnsafeDestroyRange`, what GC does after
    /// `delete_range` to reclaim space). Down stores make it fail, naming them; it may be
    /// repeated.
    pub async fn unsafe_destroy_range(&self, range: impl Into<KeyRange>) -> Result<(), Error> {
        let ctx = self.context();
        let range = range.into();
        if range.end().is_empty() {
            return Err(Error::InvalidArgument(format!(
                "unsafe destroy range needs a bounded range, got {range}"
            )));
        }
        let range = ctx.config.keyspace_codec().encode_range(range);
        let stores: Vec<_> = ctx
            .pd
            .get_all_stores()
            .await?
            .into_iter()
            .filter(|s| !is_tiflash(s))
            .collect();
        let destroy = DestroyRange::new(range, stores)?;
        let done = run(ctx, destroy).await?;
        if done == 0 {
            warn!("unsafe destroy range: PD lists no TiKV store");
        }
        Ok(())
    }

    /// Brings `range` (user keys) back to how it was at `version` (TiDB's `FLASHBACK
    /// CLUSTER` flow, see `tikv_core::flashback`): the regions at the range's edges are split
    /// off, every region is prepared (locked: other requests fail with a flashback-in-progress
    /// region error meanwhile) at a fresh start ts, then flashed back at a fresh commit ts,
    /// which the report gives. `version` must lie between the txn safe point and now.
    pub async fn flashback_to_version(
        &self,
        range: impl Into<KeyRange>,
        version: Timestamp,
        concurrency: usize,
    ) -> Result<FlashbackReport, Error> {
        let ctx = self.context();
        let range = range.into();
        if range.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "empty or inverted range {range}"
            )));
        }
        let now = ctx.pd.get_timestamp().await?;
        if version > now {
            return Err(Error::InvalidArgument(format!(
                "cannot flash back to {version}, which is in the future (now {now})"
            )));
        }
        let state = ctx.pd.get_gc_state(ctx.gc_keyspace(), false, false).await?;
        if version < state.txn_safe_point {
            return Err(Error::TxnAbortedByGc {
                start_ts: version.as_u64(),
                txn_safe_point: state.txn_safe_point.as_u64(),
            });
        }
        // Only the range's regions may be locked: split at its edges first.
        let edges: Vec<Key> = [range.start(), range.end()]
            .into_iter()
            .filter(|k| !k.is_empty())
            .cloned()
            .collect();
        if !edges.is_empty() {
            self.split_regions(edges, None).await?;
        }
        let stored = ctx.config.keyspace_codec().encode_range(range);
        let start_ts = ctx.pd.get_timestamp().await?;
        let phase = |phase: FlashbackPhase| {
            let stored = stored.clone();
            async move {
                let done = ctx
                    .run_range_tasks(stored, concurrency, |task| {
                        let ctx = ctx.clone();
                        async move {
                            let backoff =
                                Backoffer::new("flashback", ctx.config.budget(budget::SPLIT_MAX));
                            let m = flashback(task, version, start_ts, phase);
                            run(&ctx, Budgeted::new(backoff, m)).await
                        }
                    })
                    .await?;
                Ok::<usize, Error>(done.into_iter().sum())
            }
        };
        let regions = phase(FlashbackPhase::Prepare).await?;
        let commit_ts = ctx.pd.get_timestamp().await?;
        phase(FlashbackPhase::Flashback(commit_ts)).await?;
        Ok(FlashbackReport {
            start_ts,
            commit_ts,
            regions,
        })
    }

    /// The smallest safe ts (resolved ts) of the TiKV stores in `zone` (their `zone` label;
    /// `None`: every store), asked of each store now (`GetStoreSafeTS` over the whole key
    /// space; client-go's `GetMinSafeTS`, which caches it): a stale read at or below it is
    /// served by any replica in the zone. A store that does not answer fails the call,
    /// named: without its value the minimum could be too high. Stores without regions
    /// (safe ts 0) do not count; 0 when no store has one.
    pub async fn min_safe_ts(&self, zone: Option<&str>) -> Result<Timestamp, Error> {
        let ctx = self.context();
        let stores: Vec<_> = ctx
            .pd
            .get_all_stores()
            .await?
            .into_iter()
            .filter(|s| !is_tiflash(s) && s.state != tikv_core::StoreState::Tombstone)
            .filter(|s| zone.is_none_or(|z| s.labels.iter().any(|(k, v)| k == "zone" && v == z)))
            .collect();
        if stores.is_empty() {
            return Err(Error::InvalidArgument(match zone {
                Some(z) => format!("no TiKV store has the label zone={z}"),
                None => "PD lists no TiKV store".to_string(),
            }));
        }
        let mut min: Option<u64> = None;
        for store in stores {
            let request = TikvRequest::GetStoreSafeTs(kvrpcpb::StoreSafeTsRequest {
                key_range: Some(kvrpcpb::KeyRange::default()),
            });
            let reply = ctx.send_to_store(store.id, request).await?;
            let TikvResponse::GetStoreSafeTs(r) = reply else {
                return Err(Error::Protocol {
                    target: tikv_core::Target::Store {
                        id: store.id,
                        address: store.address.clone(),
                    },
                    detail: format!("GetStoreSafeTS answered with {}", reply.method_name()),
                });
            };
            // 0: the store holds no initialized region, so it serves no stale read either.
            if r.safe_ts != 0 {
                min = Some(min.map_or(r.safe_ts, |m| m.min(r.safe_ts)));
            }
        }
        Ok(Timestamp::from_u64(min.unwrap_or(0)))
    }

    /// Runs a coprocessor payload (`tp` and encoded `data`, e.g. TiDB's DAG or checksum
    /// requests) at `start_ts` over `ranges` (user keys, bounded), one request per region
    /// with its parts of the ranges, locks resolved as a reader's; returns each region's
    /// answer in key order (what client-go's coprocessor transport gives TiDB).
    pub async fn coprocessor(
        &self,
        tp: i64,
        data: bytes::Bytes,
        start_ts: Timestamp,
        ranges: Vec<KeyRange>,
    ) -> Result<Vec<CopResponse>, Error> {
        let ctx = self.context();
        let codec = ctx.config.keyspace_codec();
        let ranges = ranges.into_iter().map(|r| codec.encode_range(r)).collect();
        let cop = Coprocessor::new(tp, data, start_ts, ranges)?;
        let backoff = Backoffer::new("coprocessor", ctx.config.budget(budget::SCAN));
        let result = run(ctx, Budgeted::new(backoff, cop)).await;
        codec.decode_result(result)
    }

    /// The checksum of the data in `range` (user keys, bounded) as of `start_ts`: CRC-64
    /// XOR of every visible `key ‖ value`, the pairs and their bytes — TiKV's coprocessor
    /// checksum, what backup and import tools compare; keys count in user form (a keyspace's
    /// prefix is rewritten away).
    pub async fn checksum(
        &self,
        range: impl Into<KeyRange>,
        start_ts: Timestamp,
    ) -> Result<Checksum, Error> {
        let codec = self.context().config.keyspace_codec();
        let rule = codec.prefix().map(|p| tipb::ChecksumRewriteRule {
            old_prefix: Some(bytes::Bytes::new()),
            new_prefix: Some(bytes::Bytes::copy_from_slice(p.as_bytes())),
        });
        let request = tipb::ChecksumRequest {
            scan_on: Some(tipb::ChecksumScanOn::Table as i32),
            algorithm: Some(tipb::ChecksumAlgorithm::Crc64Xor as i32),
            rule,
            ..Default::default()
        };
        let data = bytes::Bytes::from(prost::Message::encode_to_vec(&request));
        let answers = self
            .coprocessor(CHECKSUM_TP, data, start_ts, vec![range.into()])
            .await?;
        let mut sum = Checksum::default();
        for a in answers {
            let r: tipb::ChecksumResponse =
                prost::Message::decode(a.data).map_err(|e| Error::KeyError {
                    key: a
                        .ranges
                        .first()
                        .map(|r| r.start().clone())
                        .unwrap_or_default(),
                    message: format!("region {}: checksum answer does not decode: {e}", a.region),
                })?;
            sum.crc64_xor ^= r.checksum.unwrap_or(0);
            sum.total_kvs += r.total_kvs.unwrap_or(0);
            sum.total_bytes += r.total_bytes.unwrap_or(0);
        }
        Ok(sum)
    }

    /// The MVCC state of `key`: its lock, write records and long values.
    pub async fn mvcc_by_key(&self, key: impl Into<Key>) -> Result<MvccInfo, Error> {
        let ctx = self.context();
        let codec = ctx.config.keyspace_codec();
        let backoff = Backoffer::new("mvcc by key", ctx.config.budget(budget::GET));
        let result = run(
            ctx,
            Budgeted::new(backoff, MvccByKey::new(codec, key.into())),
        )
        .await;
        codec.decode_result(result)
    }

    /// The first key (in key order) the transaction started at `start_ts` wrote, with its MVCC
    /// state; `None` if no region has a record of it.
    pub async fn mvcc_by_start_ts(
        &self,
        start_ts: Timestamp,
    ) -> Result<Option<(Key, MvccInfo)>, Error> {
        let ctx = self.context();
        let codec = ctx.config.keyspace_codec();
        let backoff = Backoffer::new("mvcc by start ts", ctx.config.budget(budget::SCAN));
        let result = run(
            ctx,
            Budgeted::new(backoff, MvccByStartTs::new(codec, start_ts)),
        )
        .await;
        codec.decode_result(result)
    }
}

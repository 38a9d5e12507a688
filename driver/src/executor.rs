//! Runs core machines: the one place where effects become I/O.
//!
//! [`run`] drives a machine on the caller's task: it polls the machine for effects, starts each
//! effect as a future, and feeds outcomes back as they complete, so a multi-region operation's
//! requests run concurrently. No client-wide lock is held while a machine computes: the caches
//! lock inside, per lookup or update, and each operation owns its RNG and budget.

use std::sync::{Arc, Weak};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tikv_core::backoff::{Backoffer, budget};
use tikv_core::machine::{Cx, Detached, Effect, EffectId, LocateQuery, Machine, Outcome, Step};
use tikv_core::{
    Config, Delivery, Error, RegionCache, Rng, RngForks, StoreCache, Target, TikvRequest,
    options::ContextOptions, txn::TxnStatusCache,
};
use tracing::debug;

/// A seed when the configuration gives none: std's per-process random hash keys (jitter only
/// needs different clients to differ).
fn entropy() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

use crate::batch::BatchClient;
use crate::grpc::CallError;
use crate::pd::PdClient;
use crate::runtime::{BoxFuture, Runtime};
use crate::transport::SharedTransport;

/// Everything an operation needs to run.
pub struct ClientContext<R: Runtime> {
    /// The runtime.
    pub runtime: R,
    /// The configuration.
    pub config: Config,
    /// PD.
    pub pd: PdClient<R>,
    /// How requests reach TiKV and PD.
    pub transport: SharedTransport,
    /// BatchCommands streams (used when `config.batch_commands`).
    pub batch: BatchClient<R>,
    /// Region cache.
    pub regions: RegionCache,
    /// Store cache.
    pub stores: StoreCache,
    /// Decided transaction outcomes, shared by every lock resolution.
    pub txn_statuses: TxnStatusCache,
    /// Where each operation's RNG comes from.
    pub rng: RngForks,
    /// Background tasks (`Effect::Spawn`) still running.
    pub background: Arc<std::sync::atomic::AtomicUsize>,
    /// The txn safe point transactional reads are checked against.
    pub txn_safe_point: crate::gc::SafePointWatch,
}

impl<R: Runtime> ClientContext<R> {
    /// Connects to PD through `transport` and sets up caches and BatchCommands: what every
    /// client type shares. The configuration is bound to the client's `mode` and, under API
    /// V2, to the keyspace's id, looked up in PD.
    pub async fn connect(
        runtime: R,
        transport: SharedTransport,
        endpoints: &[impl AsRef<str>],
        config: Config,
        mode: tikv_core::KeyMode,
    ) -> Result<Self, Error> {
        // Region boundaries are read per mode: bind it before PD is asked for any.
        let mut config = config.bind(mode, None);
        let endpoints: Vec<String> = endpoints.iter().map(|e| e.as_ref().to_string()).collect();
        let pd_config = crate::pd::PdConfig {
            timeout: config.pd_timeout,
            region_keys: config.region_keys(),
            ..Default::default()
        };
        let pd =
            PdClient::connect(runtime.clone(), transport.clone(), &endpoints, pd_config).await?;
        if config.api_version == tikv_core::ApiVersion::V2 {
            let name = config
                .keyspace
                .clone()
                .unwrap_or_else(|| tikv_core::request::DEFAULT_KEYSPACE.to_string());
            let id = pd.load_keyspace(&name).await?;
            config = config.bind(mode, Some(id));
            config.keyspace = Some(name);
        }
        let seed = config.rng_seed.unwrap_or_else(entropy);
        let batch_config = crate::batch::BatchConfig {
            streams_per_store: config.grpc_connection_count,
            policy: tikv_core::batch::BatchPolicy {
                max_batch: config.max_batch_size.max(1),
                ..Default::default()
            },
            ..Default::default()
        };
        let batch = BatchClient::new(runtime.clone(), transport.clone(), batch_config);
        Ok(ClientContext {
            runtime,
            pd,
            transport,
            batch,
            regions: RegionCache::new(config.region_cache_ttl, config.region_cache_ttl_jitter),
            stores: StoreCache::new(),
            txn_statuses: TxnStatusCache::default(),
            rng: RngForks::new(seed),
            background: Arc::default(),
            txn_safe_point: Default::default(),
            config,
        })
    }

    /// The gRPC transport for `config` (TLS when `config.security` is set).
    pub fn grpc_transport(runtime: &R, config: &Config) -> SharedTransport {
        let channel = crate::grpc::ChannelConfig {
            tls: config.security.clone(),
            stream_window: config.grpc_initial_window_size,
            connection_window: config.grpc_initial_conn_window_size,
            keepalive_interval: config.grpc_keepalive_time,
            keepalive_timeout: config.grpc_keepalive_timeout,
            connect_timeout: config.grpc_connect_timeout,
            ..Default::default()
        };
        std::sync::Arc::new(crate::transport::GrpcTransport::new(
            runtime.clone(),
            channel,
            config.grpc_connection_count,
        ))
    }

    /// Runs `f` with a context over the shared caches; `op` is the operation's own state
    /// (ids, RNG, fallback budget).
    fn with_cx<T>(&self, op: &mut OpState, f: impl FnOnce(&mut Cx<'_>) -> T) -> T {
        let mut cx = Cx {
            now: self.runtime.now(),
            rng: &mut op.rng,
            config: &self.config,
            regions: &self.regions,
            stores: &self.stores,
            txn_statuses: &self.txn_statuses,
            context: &op.context,
            ids: &mut op.ids,
            backoff: &mut op.backoff,
        };
        f(&mut cx)
    }

    /// The state of a new operation: its own RNG, so that what runs beside it does not
    /// change its draws, and the request context its options give.
    fn start_op(&self, context: Arc<ContextOptions>) -> OpState {
        OpState {
            ids: 0,
            rng: self.rng.fork(),
            backoff: Backoffer::new("operation", self.config.budget(budget::RAWKV)),
            context,
        }
    }
}

/// What one operation owns while it runs.
struct OpState {
    ids: u64,
    rng: Rng,
    /// The budget of machines that do not bring their own (top-level operations wrap
    /// themselves in `Budgeted`).
    backoff: Backoffer,
    /// What every request of the operation carries in its `Context`.
    context: Arc<ContextOptions>,
}

/// Runs `machine` to completion with the default request context. Background tasks it
/// spawns run on the runtime, each until it finishes or the client is dropped.
pub async fn run<R: Runtime, M: Machine>(ctx: &Arc<ClientContext<R>>, machine: M) -> M::Output {
    run_with(ctx, machine, Arc::default()).await
}

/// Runs `machine` to completion, its requests carrying `context` (and so do those of the
/// background tasks it spawns, e.g. a transaction's secondary commits).
pub async fn run_with<R: Runtime, M: Machine>(
    ctx: &Arc<ClientContext<R>>,
    mut machine: M,
    context: Arc<ContextOptions>,
) -> M::Output {
    let mut op = ctx.start_op(context.clone());
    let mut inflight: FuturesUnordered<BoxFuture<'_, (EffectId, Outcome)>> =
        FuturesUnordered::new();
    loop {
        let step = ctx.with_cx(&mut op, |cx| {
            loop {
                match machine.poll(cx) {
                    Step::Effect(Effect::Spawn { task, .. }) => spawn(ctx, task, context.clone()),
                    Step::Effect(effect) => inflight.push(Box::pin(execute(ctx, effect))),
                    Step::Wait => return None,
                    Step::Done(output) => return Some(output),
                }
            }
        });
        if let Some(output) = step {
            return output;
        }
        let Some((id, outcome)) = inflight.next().await else {
            // A machine that waits with nothing outstanding would wait forever; every machine
            // in core emits an effect before it waits (the fuzz harness and the test harness
            // check it).
            unreachable!("machine is waiting with no effect outstanding");
        };
        ctx.with_cx(&mut op, |cx| machine.handle(cx, id, outcome));
    }
}

/// Runs a detached machine as a task of its own. It holds the client only weakly between
/// steps: once every handle of the client is gone, the task stops at its next step (effects
/// already in flight finish first, as they hold the client while they run).
fn spawn<R: Runtime>(ctx: &Arc<ClientContext<R>>, task: Detached, context: Arc<ContextOptions>) {
    let weak = Arc::downgrade(ctx);
    let running = Running::start(&ctx.background);
    ctx.runtime.spawn(async move {
        run_detached(weak, task, context).await;
        drop(running);
    });
}

/// Counts a background task as running until dropped (however the task ends).
struct Running(Arc<std::sync::atomic::AtomicUsize>);

impl Running {
    fn start(count: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Running(count.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

async fn run_detached<R: Runtime>(
    client: Weak<ClientContext<R>>,
    mut machine: Detached,
    context: Arc<ContextOptions>,
) {
    let name = machine.name();
    let Some(ctx) = client.upgrade() else {
        return;
    };
    let mut op = ctx.start_op(context.clone());
    drop(ctx);
    let mut inflight: FuturesUnordered<BoxFuture<'static, (EffectId, Outcome)>> =
        FuturesUnordered::new();
    loop {
        let Some(ctx) = client.upgrade() else {
            debug!(task = name, "client closed; background task stops");
            return;
        };
        let done = ctx.with_cx(&mut op, |cx| {
            loop {
                match machine.poll(cx) {
                    Step::Effect(Effect::Spawn { task, .. }) => spawn(&ctx, task, context.clone()),
                    Step::Effect(effect) => {
                        let ctx = ctx.clone();
                        inflight.push(Box::pin(async move { execute(&ctx, effect).await }));
                    }
                    Step::Wait => return false,
                    Step::Done(()) => return true,
                }
            }
        });
        drop(ctx);
        if done {
            return;
        }
        let Some((id, outcome)) = inflight.next().await else {
            unreachable!("background task is waiting with no effect outstanding");
        };
        let Some(ctx) = client.upgrade() else {
            return;
        };
        ctx.with_cx(&mut op, |cx| machine.handle(cx, id, outcome));
    }
}

async fn execute<R: Runtime>(ctx: &ClientContext<R>, effect: Effect) -> (EffectId, Outcome) {
    let id = effect.id();
    let outcome = match effect {
        Effect::Rpc {
            store_id,
            address,
            request,
            timeout,
            ..
        } => rpc(ctx, store_id, address, request, timeout).await,
        Effect::Locate { query, .. } => Outcome::Located(match query {
            LocateQuery::Key(k) => ctx.pd.get_region(k.as_bytes()).await,
            LocateQuery::Before(k) => ctx.pd.get_prev_region(k.as_bytes()).await,
            // The Locate machine asks PD only questions PD answers in one request.
            LocateQuery::EndKey(k) => Err(Error::InvalidArgument(format!(
                "an end-key lookup ({k}) is not a PD request"
            ))),
            LocateQuery::Id(id) => ctx.pd.get_region_by_id(id).await,
        }),
        Effect::ResolveStore { store_id, .. } => Outcome::Store(ctx.pd.get_store(store_id).await),
        Effect::Tso { count, .. } => Outcome::Timestamps(ctx.pd.get_timestamps(count).await),
        Effect::Sleep { duration, .. } => {
            ctx.runtime.sleep(duration).await;
            Outcome::Slept
        }
        // Taken out by the run loops before an effect reaches here.
        Effect::Spawn { .. } => Outcome::Slept,
    };
    (id, outcome)
}

fn call_error(e: CallError, method: &'static str, target: Target) -> Error {
    if e.from_server {
        Error::Grpc {
            method,
            target,
            code: e.status.code,
            message: e.status.message,
        }
    } else {
        Error::Transport {
            method,
            target,
            delivery: e.delivery,
            detail: e.status.to_string(),
        }
    }
}

async fn rpc<R: Runtime>(
    ctx: &ClientContext<R>,
    store_id: u64,
    address: String,
    request: Box<TikvRequest>,
    timeout: std::time::Duration,
) -> Outcome {
    let method = request.method_name();
    let target = Target::Store {
        id: store_id,
        address: address.clone(),
    };
    if ctx.config.batch_commands && request.is_batchable() {
        return batched(ctx, target, address, request, timeout).await;
    }
    let body = bytes::Bytes::from(request.encode_to_vec());
    match ctx
        .transport
        .unary(&address, request.path(), body, timeout)
        .await
    {
        Ok(bytes) => match request.decode_response(bytes) {
            Ok(response) => Outcome::Response(Box::new(response)),
            Err(e) => Outcome::RpcFailed {
                delivery: Delivery::MaybeDelivered,
                error: Error::Protocol {
                    target,
                    detail: format!("{method} response does not decode: {e}"),
                },
            },
        },
        Err(e) => Outcome::RpcFailed {
            delivery: e.delivery,
            error: call_error(e, method, target),
        },
    }
}

async fn batched<R: Runtime>(
    ctx: &ClientContext<R>,
    target: Target,
    address: String,
    request: Box<TikvRequest>,
    timeout: std::time::Duration,
) -> Outcome {
    let method = request.method();
    let name = request.method_name();
    let Some(encoded) = request.encode_batch() else {
        return Outcome::RpcFailed {
            delivery: Delivery::NotSent,
            error: Error::InvalidArgument(format!("{name} cannot be batched")),
        };
    };
    drop(request);
    match ctx.batch.call(&address, encoded.into(), timeout).await {
        Ok(cmd) => match method.response_from_batch(cmd) {
            Some(response) => Outcome::Response(Box::new(response)),
            None => Outcome::RpcFailed {
                delivery: Delivery::MaybeDelivered,
                error: Error::Protocol {
                    target,
                    detail: format!(
                        "{name}: BatchCommands answered with another method's response"
                    ),
                },
            },
        },
        Err(e) => Outcome::RpcFailed {
            delivery: e.delivery,
            error: call_error(e, name, target),
        },
    }
}

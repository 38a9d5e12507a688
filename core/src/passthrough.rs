//! Sending any TiKV request (client-go's `tikvrpc` + `SendReq`): to the region holding a key,
//! with the routing, retries and region-error handling of built-in calls
//! ([`SingleKey`](crate::plan::SingleKey) with [`PASSTHROUGH`] options), or to one store as it
//! is ([`StoreRequest`]).
//!
//! A request the client does not know the effects of is treated as not idempotent: it is
//! resent only when it certainly did not arrive, and a lost reply is
//! [`Error::Undetermined`]. Key errors stay in the response, for the caller.

use crate::error::Error;
use crate::machine::{Cx, Effect, EffectId, Machine, Outcome, Step};
use crate::region::StoreId;
use crate::request::{RpcOptions, stamp_context};
use crate::rpc::{TikvRequest, TikvResponse};
use crate::store_cache::StoreLookup;

/// The options of a passthrough request: not idempotent, the configured timeout.
pub const PASSTHROUGH: RpcOptions = RpcOptions {
    idempotent: false,
    max_execution: None,
    timeout: None,
};

#[derive(Debug)]
enum State {
    Start,
    Resolving(EffectId),
    Sending(EffectId),
    Done,
}

/// Sends a request to one store, once: no region routing and no retry (the request names
/// no region, or the caller wants exactly this store's answer).
#[derive(Debug)]
pub struct StoreRequest {
    store_id: StoreId,
    request: Option<TikvRequest>,
    state: State,
    result: Option<Result<TikvResponse, Error>>,
}

impl StoreRequest {
    /// Sends `request` to store `store_id` (its context, if any, stamped with the client's
    /// settings).
    pub fn new(store_id: StoreId, request: TikvRequest) -> Self {
        StoreRequest {
            store_id,
            request: Some(request),
            state: State::Start,
            result: None,
        }
    }

    fn send(&mut self, cx: &mut Cx<'_>, address: String) -> Step<Result<TikvResponse, Error>> {
        let Some(mut request) = self.request.take() else {
            return Step::Wait;
        };
        if let Some(ctx) = request.context_mut() {
            stamp_context(ctx, cx.config, &PASSTHROUGH);
            cx.context.apply(ctx);
        }
        let id = cx.next_id();
        self.state = State::Sending(id);
        Step::Effect(Effect::Rpc {
            id,
            store_id: self.store_id,
            address,
            request: Box::new(request),
            timeout: cx.config.rpc_timeout,
        })
    }

    fn unknown_store(&self, why: &str) -> Error {
        Error::InvalidArgument(format!("store {}: {why}", self.store_id))
    }
}

impl Machine for StoreRequest {
    type Output = Result<TikvResponse, Error>;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Self::Output> {
        if let Some(result) = self.result.take() {
            self.state = State::Done;
            return Step::Done(result);
        }
        match self.state {
            State::Start => match cx.stores.lookup(self.store_id) {
                StoreLookup::Ready(store) => self.send(cx, store.address.clone()),
                StoreLookup::Tombstone => {
                    self.state = State::Done;
                    Step::Done(Err(self.unknown_store("a tombstone")))
                }
                StoreLookup::Unknown => {
                    let id = cx.next_id();
                    self.state = State::Resolving(id);
                    Step::Effect(Effect::ResolveStore {
                        id,
                        store_id: self.store_id,
                    })
                }
            },
            State::Resolving(_) | State::Sending(_) | State::Done => Step::Wait,
        }
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        match (&self.state, outcome) {
            (State::Resolving(want), Outcome::Store(store)) if *want == id => match store {
                Ok(store) if !store.address.is_empty() => {
                    cx.stores.insert(store);
                    self.state = State::Start;
                }
                Ok(_) => self.result = Some(Err(self.unknown_store("no address"))),
                Err(e) => self.result = Some(Err(e)),
            },
            (State::Sending(want), outcome) if *want == id => {
                self.result = Some(match outcome {
                    Outcome::Response(r) => Ok(*r),
                    Outcome::RpcFailed { error, .. } => Err(error),
                    other => Err(Error::Cancelled(format!("unexpected outcome {other:?}"))),
                });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use tikv_proto::kvrpcpb;

    use super::*;
    use crate::error::Delivery;
    use crate::testing::Harness;
    use crate::testing::resp::{self, Sent};

    fn get() -> TikvRequest {
        TikvRequest::KvGet(kvrpcpb::GetRequest {
            key: "k".into(),
            version: 10,
            ..Default::default()
        })
    }

    #[test]
    fn a_store_request_goes_to_the_store_and_returns_its_answer() {
        let mut h = Harness::new(1).with_stores(2);
        let out = h.run(StoreRequest::new(2, get()), |e| {
            let sent = Sent::of(e).expect("an RPC");
            assert_eq!(sent.store, 2);
            resp::get("v")
        });
        let TikvResponse::KvGet(r) = out.unwrap() else {
            panic!("a get answer");
        };
        assert_eq!(r.value, "v");
    }

    #[test]
    fn an_unknown_store_is_resolved_first_and_failures_are_returned() {
        let mut h = Harness::new(1).with_stores(1);
        let out = h.run(StoreRequest::new(7, get()), |e| match e {
            Effect::ResolveStore { store_id: 7, .. } => Outcome::Store(Ok(crate::Store {
                id: 7,
                address: "store-7".into(),
                labels: vec![],
                state: crate::StoreState::Up,
            })),
            Effect::Rpc { .. } => resp::rpc_failed(Delivery::MaybeDelivered),
            other => panic!("unexpected {other:?}"),
        });
        assert!(out.is_err());
        assert_eq!(resp::kinds(&h.effects), ["ResolveStore", "KvGet"]);
    }
}

//! Table tests of the transaction machines, driven by [`Harness`] against scripted replies
//! built with [`resp`]: what each machine sends (methods, keys, timestamps, stores) and what
//! it returns.

use crate::machine::{Effect, Outcome};
use crate::testing::resp::{self, Sent};
use crate::testing::{Harness, region};

mod commit;
mod gc_locks;
mod keyspace;
mod lock_state;
mod pessimistic;
mod resolve;
mod scan;
mod snapshot;

/// Two stores and two cached regions (machines retry within the harness's 20 s budget) split at "m": `[, m)` on store 1, `[m, )` on store 2.
fn harness() -> Harness {
    let mut h = Harness::new(1).with_stores(2);
    h.cache(region(1, "", "m", &[1]));
    h.cache(region(2, "m", "", &[2]));
    h
}

/// A responder for a cluster whose regions are all cached: TSO answers from `tso` in order,
/// RPCs are answered by `rpc` (given the request as sent); anything else is a test failure.
fn cluster(
    tso: impl IntoIterator<Item = Outcome>,
    mut rpc: impl FnMut(&Sent) -> Outcome,
) -> impl FnMut(&Effect) -> Outcome {
    let mut tso = tso.into_iter();
    move |e| match e {
        Effect::Tso { count: 1, .. } => tso.next().expect("more TSO requests than scripted"),
        Effect::Rpc { .. } => rpc(&Sent::of(e).expect("an RPC")),
        other => panic!("unexpected effect {other:?}"),
    }
}

/// The request inside `sent`, as the named variant (panics on another method).
macro_rules! req {
    ($sent:expr, $variant:ident) => {
        match &$sent.request {
            $crate::rpc::TikvRequest::$variant(r) => r,
            other => panic!("expected {}, got {other:?}", stringify!($variant)),
        }
    };
}
use req;

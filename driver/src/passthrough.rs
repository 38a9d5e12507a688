//! Sending any TiKV request (client-go's `tikvrpc` + `SendReq`), on both clients: routed to
//! the region holding a key with the built-in calls' retries, or sent to one store as it is.
//! The decisions are `tikv_core::passthrough`'s.

use std::sync::Arc;

use tikv_core::backoff::{Backoffer, budget};
use tikv_core::machine::Budgeted;
use tikv_core::passthrough::{PASSTHROUGH, StoreRequest};
use tikv_core::plan::SingleKey;
use tikv_core::{Error, Key, StoreId, TikvRequest, TikvResponse};

use crate::executor::{ClientContext, run};
use crate::runtime::Runtime;

impl<R: Runtime> ClientContext<R> {
    /// Sends `request` to the region holding `key` (a user key of the client's keyspace).
    pub async fn send_routed(
        self: &Arc<Self>,
        key: Key,
        request: TikvRequest,
    ) -> Result<TikvResponse, Error> {
        let mut request = request;
        if request.context_mut().is_none() {
            return Err(Error::InvalidArgument(format!(
                "{} names no region: send it to a store",
                request.method_name()
            )));
        }
        let stored = self.config.keyspace_codec().encode(key);
        let backoff = Backoffer::new("request", self.config.budget(budget::GET));
        let send = SingleKey::new(stored, request, PASSTHROUGH);
        run(self, Budgeted::new(backoff, send)).await
    }

    /// Sends `request` to store `store_id`, once.
    pub async fn send_to_store(
        self: &Arc<Self>,
        store_id: StoreId,
        request: TikvRequest,
    ) -> Result<TikvResponse, Error> {
        run(self, StoreRequest::new(store_id, request)).await
    }
}

macro_rules! passthrough_methods {
    ($client:ident) => {
        impl<R: Runtime> crate::$client<R> {
            /// Sends any TiKV request to the region holding `key` (a user key; under API V2
            /// the keys inside `request` must be given in stored form, keyspace prefix
            /// included, as the client does not rewrite a request it does not know). The
            /// request's context (region, epoch, peer, and the client's settings) is filled
            /// in; region errors are handled like built-in calls' (retries within a 20 s
            /// budget). It is treated as not idempotent: a lost reply is
            /// [`Error::Undetermined`]. Key errors come back in the response.
            ///
            /// ```no_run
            /// # async fn f<R: tikv_driver::Runtime>(
            /// #     client: tikv_driver::RawClient<R>,
            /// # ) -> tikv_driver::Result<()> {
            /// use tikv_core::{TikvRequest, TikvResponse};
            /// use tikv_proto::kvrpcpb; // `tikv_tokio::proto::kvrpcpb` in the facades
            ///
            /// let request = TikvRequest::RawGet(kvrpcpb::RawGetRequest {
            ///     key: "k".into(),
            ///     ..Default::default()
            /// });
            /// if let TikvResponse::RawGet(r) = client.send_request("k", request).await? {
            ///     println!("{:?}", r.value);
            /// }
            /// # Ok(()) }
            /// ```
            pub async fn send_request(
                &self,
                key: impl Into<Key>,
                request: TikvRequest,
            ) -> Result<TikvResponse, Error> {
                self.ctx.send_routed(key.into(), request).await
            }

            /// Sends any TiKV request to store `store_id` as it is (its context, if any,
            /// stamped with the client's settings), once: for store-level requests
            /// (`UnsafeDestroyRange`, `GetStoreSafeTs`, ...) or a chosen replica.
            pub async fn send_request_to_store(
                &self,
                store_id: StoreId,
                request: TikvRequest,
            ) -> Result<TikvResponse, Error> {
                self.ctx.send_to_store(store_id, request).await
            }
        }
    };
}

passthrough_methods!(RawClient);
passthrough_methods!(TransactionClient);

//! Typed TiKV requests and responses: the body of an `Rpc` effect and of its outcome.
//!
//! [`TikvRequest`] has one variant per TiKV method the client sends, carrying the prost
//! message; [`TikvResponse`] mirrors it. The envelope knows each method's gRPC path, whether it
//! may travel inside a BatchCommands stream, where its `Context` and its region error are, and
//! how to decode its response — so machines build typed requests, and transports move them
//! without knowing what they are.

use bytes::Bytes;
use prost::Message;
use tikv_proto::method::{BatchMethod, Method};
use tikv_proto::tikvpb::{batch_commands_request, batch_commands_response, tikv_service as svc};
use tikv_proto::{errorpb, kvrpcpb};

macro_rules! ctx_of {
    (yes, $r:expr) => {
        Some($r.context.get_or_insert_with(Default::default))
    };
    (no, $r:expr) => {{
        let _ = $r;
        None
    }};
}

macro_rules! region_error_of {
    (yes, $r:expr) => {
        $r.region_error.as_deref()
    };
    (no, $r:expr) => {{
        let _ = $r;
        None
    }};
}

macro_rules! take_region_error_of {
    (yes, $r:expr) => {
        $r.region_error.take().map(|e| *e)
    };
    (no, $r:expr) => {{
        let _ = $r;
        None
    }};
}

/// `message` as field `tag` of a message of its own (a oneof variant inside its wrapper).
fn encode_variant<M: Message>(tag: u32, message: &M) -> Vec<u8> {
    let mut buf = Vec::with_capacity(prost::encoding::message::encoded_len(tag, message));
    prost::encoding::message::encode(tag, message, &mut buf);
    buf
}

macro_rules! tikv_rpcs {
    (
        batch { $($b:ident: ctx = $bctx:ident, region_error = $brerr:ident;)* }
        unary { $($u:ident: ctx = $uctx:ident, region_error = $urerr:ident;)* }
    ) => {
        /// A request to a TiKV store, one variant per method (named as in `tikv_service`).
        #[derive(Clone, Debug, PartialEq)]
        #[allow(missing_docs)] // each variant is the method of the same name
        pub enum TikvRequest {
            $($b(<svc::$b as Method>::Request),)*
            $($u(<svc::$u as Method>::Request),)*
        }

        /// A TiKV store's response, one variant per method (named as in `tikv_service`).
        #[derive(Clone, Debug, PartialEq)]
        #[allow(missing_docs)] // each variant is the method of the same name
        pub enum TikvResponse {
            $($b(<svc::$b as Method>::Response),)*
            $($u(<svc::$u as Method>::Response),)*
        }

        /// Which TiKV method a request or response belongs to.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[allow(missing_docs)] // each variant is the method of the same name
        pub enum TikvMethod {
            $($b,)*
            $($u,)*
        }

        impl TikvMethod {
            /// Takes this method's response out of a BatchCommands response; `None` when the
            /// server answered with another method's variant (or the method is unary-only).
            pub fn response_from_batch(self, cmd: batch_commands_response::response::Cmd) -> Option<TikvResponse> {
                match self {
                    $(TikvMethod::$b => <svc::$b as BatchMethod>::from_batch(cmd).map(TikvResponse::$b),)*
                    _ => None,
                }
            }
        }

        impl TikvRequest {
            /// The method this request calls.
            pub fn method(&self) -> TikvMethod {
                match self {
                    $(TikvRequest::$b(_) => TikvMethod::$b,)*
                    $(TikvRequest::$u(_) => TikvMethod::$u,)*
                }
            }

            /// The gRPC path of the unary method.
            pub fn path(&self) -> &'static str {
                match self {
                    $(TikvRequest::$b(_) => <svc::$b as Method>::PATH,)*
                    $(TikvRequest::$u(_) => <svc::$u as Method>::PATH,)*
                }
            }

            /// The method's name, for errors and logs.
            pub fn method_name(&self) -> &'static str {
                match self {
                    $(TikvRequest::$b(_) => stringify!($b),)*
                    $(TikvRequest::$u(_) => stringify!($u),)*
                }
            }

            /// The request's `Context` (created empty if absent); `None` for the few methods
            /// that are addressed to a store rather than a region and carry none.
            pub fn context_mut(&mut self) -> Option<&mut kvrpcpb::Context> {
                match self {
                    $(TikvRequest::$b(r) => ctx_of!($bctx, r),)*
                    $(TikvRequest::$u(r) => ctx_of!($uctx, r),)*
                }
            }

            /// Whether the method may travel inside a BatchCommands stream.
            pub fn is_batchable(&self) -> bool {
                match self {
                    $(TikvRequest::$b(_) => true,)*
                    $(TikvRequest::$u(_) => false,)*
                }
            }

            /// The protobuf encoding of the request message.
            pub fn encode_to_vec(&self) -> Vec<u8> {
                match self {
                    $(TikvRequest::$b(r) => r.encode_to_vec(),)*
                    $(TikvRequest::$u(r) => r.encode_to_vec(),)*
                }
            }

            /// The encoded length of the request message.
            pub fn encoded_len(&self) -> usize {
                match self {
                    $(TikvRequest::$b(r) => r.encoded_len(),)*
                    $(TikvRequest::$u(r) => r.encoded_len(),)*
                }
            }

            /// Wraps the request for a BatchCommands stream, or hands it back (boxed: the
            /// request is large) when the method is unary-only.
            pub fn into_batch(self) -> Result<batch_commands_request::request::Cmd, Box<TikvRequest>> {
                match self {
                    $(TikvRequest::$b(r) => Ok(<svc::$b as BatchMethod>::into_batch(r)),)*
                    other => Err(Box::new(other)),
                }
            }

            /// The request encoded as one `BatchCommandsRequest.Request` (its oneof variant
            /// wrapped around the request), or `None` when the method is unary-only. Encoded
            /// straight from the request: nothing is moved or cloned on the way to the stream.
            pub fn encode_batch(&self) -> Option<Vec<u8>> {
                match self {
                    $(TikvRequest::$b(r) => Some(encode_variant(<svc::$b as BatchMethod>::BATCH_TAG, r)),)*
                    _ => None,
                }
            }

            /// Decodes a unary response to this request.
            pub fn decode_response(&self, bytes: Bytes) -> Result<TikvResponse, prost::DecodeError> {
                Ok(match self {
                    $(TikvRequest::$b(_) => TikvResponse::$b(Message::decode(bytes)?),)*
                    $(TikvRequest::$u(_) => TikvResponse::$u(Message::decode(bytes)?),)*
                })
            }

            /// Takes this request's response out of a BatchCommands response; `None` when the
            /// server answered with another method's variant.
            pub fn response_from_batch(&self, cmd: batch_commands_response::response::Cmd) -> Option<TikvResponse> {
                self.method().response_from_batch(cmd)
            }
        }

        impl TikvResponse {
            /// The method's name, for errors and logs.
            pub fn method_name(&self) -> &'static str {
                match self {
                    $(TikvResponse::$b(_) => stringify!($b),)*
                    $(TikvResponse::$u(_) => stringify!($u),)*
                }
            }

            /// The region error, if the store rejected the request for routing reasons.
            pub fn region_error(&self) -> Option<&errorpb::Error> {
                match self {
                    $(TikvResponse::$b(r) => region_error_of!($brerr, r),)*
                    $(TikvResponse::$u(r) => region_error_of!($urerr, r),)*
                }
            }

            /// Takes the region error out of the response.
            pub fn take_region_error(&mut self) -> Option<errorpb::Error> {
                match self {
                    $(TikvResponse::$b(r) => take_region_error_of!($brerr, r),)*
                    $(TikvResponse::$u(r) => take_region_error_of!($urerr, r),)*
                }
            }

            /// The protobuf encoding of the response message (used by servers and tests).
            pub fn encode_to_vec(&self) -> Vec<u8> {
                match self {
                    $(TikvResponse::$b(r) => r.encode_to_vec(),)*
                    $(TikvResponse::$u(r) => r.encode_to_vec(),)*
                }
            }
        }
    };
}

tikv_rpcs! {
    batch {
        KvGet: ctx = yes, region_error = yes;
        KvScan: ctx = yes, region_error = yes;
        KvPrewrite: ctx = yes, region_error = yes;
        KvPessimisticLock: ctx = yes, region_error = yes;
        KvPessimisticRollback: ctx = yes, region_error = yes;
        KvTxnHeartBeat: ctx = yes, region_error = yes;
        KvCheckTxnStatus: ctx = yes, region_error = yes;
        KvCheckSecondaryLocks: ctx = yes, region_error = yes;
        KvCommit: ctx = yes, region_error = yes;
        KvBatchGet: ctx = yes, region_error = yes;
        KvBatchRollback: ctx = yes, region_error = yes;
        KvScanLock: ctx = yes, region_error = yes;
        KvResolveLock: ctx = yes, region_error = yes;
        KvDeleteRange: ctx = yes, region_error = yes;
        KvPrepareFlashbackToVersion: ctx = yes, region_error = yes;
        KvFlashbackToVersion: ctx = yes, region_error = yes;
        KvFlush: ctx = yes, region_error = yes;
        KvBufferBatchGet: ctx = yes, region_error = yes;
        RawGet: ctx = yes, region_error = yes;
        RawBatchGet: ctx = yes, region_error = yes;
        RawPut: ctx = yes, region_error = yes;
        RawBatchPut: ctx = yes, region_error = yes;
        RawDelete: ctx = yes, region_error = yes;
        RawBatchDelete: ctx = yes, region_error = yes;
        RawScan: ctx = yes, region_error = yes;
        RawDeleteRange: ctx = yes, region_error = yes;
        RawBatchScan: ctx = yes, region_error = yes;
        RawCoprocessor: ctx = yes, region_error = yes;
        Coprocessor: ctx = yes, region_error = yes;
        GetHealthFeedback: ctx = yes, region_error = yes;
        BroadcastTxnStatus: ctx = yes, region_error = no;
    }
    unary {
        RawGetKeyTtl: ctx = yes, region_error = yes;
        RawCompareAndSwap: ctx = yes, region_error = yes;
        RawChecksum: ctx = yes, region_error = yes;
        UnsafeDestroyRange: ctx = yes, region_error = yes;
        SplitRegion: ctx = yes, region_error = yes;
        MvccGetByKey: ctx = yes, region_error = yes;
        MvccGetByStartTs: ctx = yes, region_error = yes;
        GetLockWaitInfo: ctx = yes, region_error = yes;
        GetStoreSafeTs: ctx = no, region_error = no;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_routes_paths_contexts_and_batches() {
        let mut req = TikvRequest::RawGet(kvrpcpb::RawGetRequest {
            key: "k".into(),
            ..Default::default()
        });
        assert_eq!(req.path(), "/tikvpb.Tikv/RawGet");
        req.context_mut().unwrap().region_id = 7;
        assert!(req.is_batchable());
        let cmd = req.clone().into_batch().unwrap();
        assert!(
            matches!(&cmd, batch_commands_request::request::Cmd::RawGet(r) if r.context.as_ref().unwrap().region_id == 7)
        );

        // Encoded in place, the request is what prost makes of the wrapped variant.
        let wrapped = tikv_proto::tikvpb::batch_commands_request::Request { cmd: Some(cmd) };
        assert_eq!(req.encode_batch(), Some(wrapped.encode_to_vec()));

        let cas = TikvRequest::RawCompareAndSwap(Default::default());
        assert_eq!(cas.encode_batch(), None);
        assert_eq!(cas.path(), "/tikvpb.Tikv/RawCompareAndSwap");
        assert!(cas.clone().into_batch().is_err());
        let mut safe_ts = TikvRequest::GetStoreSafeTs(Default::default());
        assert!(safe_ts.context_mut().is_none());
    }

    #[test]
    fn responses_decode_and_expose_region_errors() {
        let req = TikvRequest::RawGet(Default::default());
        let wire = kvrpcpb::RawGetResponse {
            region_error: Some(Box::new(errorpb::Error {
                message: "stale".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let mut resp = req.decode_response(wire.encode_to_vec().into()).unwrap();
        assert_eq!(resp.region_error().unwrap().message, "stale");
        assert!(resp.take_region_error().is_some() && resp.region_error().is_none());

        let good = batch_commands_response::response::Cmd::RawGet(Default::default());
        assert!(req.response_from_batch(good).is_some());
        let wrong = batch_commands_response::response::Cmd::RawPut(Default::default());
        assert!(req.response_from_batch(wrong).is_none());
    }
}

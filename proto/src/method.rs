//! The typed gRPC method table.
//!
//! Every service method the project speaks is a zero-sized type implementing [`Method`]: its
//! full gRPC path, its request and response message types and its streaming kind. TiKV methods
//! that client-go sends inside `/tikvpb.Tikv/BatchCommands` also implement [`BatchMethod`],
//! which wraps the request into (and takes the response out of) the BatchCommands oneofs.
//! Each service module also has a `METHODS` list of [`MethodInfo`], which a server (the mock
//! cluster) uses to route a path to its handler.
//!
//! The tables are generated from `proto/schema` together with the messages, so a method can
//! never be paired with the wrong message types.
//!
//! ```
//! use tikv_proto::method::{Method, MethodKind};
//! use tikv_proto::tikvpb::tikv_service::KvPessimisticRollback;
//!
//! // kvproto spells this one with a capital `KV`; the table keeps the real spelling.
//! assert_eq!(KvPessimisticRollback::PATH, "/tikvpb.Tikv/KVPessimisticRollback");
//! assert_eq!(KvPessimisticRollback::KIND, MethodKind::Unary);
//! ```

use crate::tikvpb::{batch_commands_request, batch_commands_response};

/// How request and response messages flow on a method's HTTP/2 stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MethodKind {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStreaming,
    /// A stream of requests, one response.
    ClientStreaming,
    /// Streams both ways.
    BidiStreaming,
}

impl MethodKind {
    /// The kind for the streaming flags of a method definition.
    pub const fn from_streaming(client_streaming: bool, server_streaming: bool) -> Self {
        match (client_streaming, server_streaming) {
            (false, false) => MethodKind::Unary,
            (false, true) => MethodKind::ServerStreaming,
            (true, false) => MethodKind::ClientStreaming,
            (true, true) => MethodKind::BidiStreaming,
        }
    }
}

/// A gRPC method: its path and its message types.
pub trait Method {
    /// The full gRPC path, e.g. `/tikvpb.Tikv/KvGet` (case-sensitive).
    const PATH: &'static str;
    /// Whether requests and responses are single messages or streams.
    const KIND: MethodKind;
    /// The request message (one per call, or each message of the request stream).
    type Request: prost::Message + Default + 'static;
    /// The response message (one per call, or each message of the response stream).
    type Response: prost::Message + Default + 'static;
}

/// A TiKV method that can also travel inside a `/tikvpb.Tikv/BatchCommands` stream.
pub trait BatchMethod: Method {
    /// The field number of the method's variant in the BatchCommands request/response oneofs.
    const BATCH_TAG: u32;

    /// Wraps a request into its BatchCommands request variant.
    fn into_batch(request: Self::Request) -> batch_commands_request::request::Cmd;

    /// Takes this method's response out of a BatchCommands response variant; `None` when the
    /// variant belongs to another method (a server bug the caller reports).
    fn from_batch(response: batch_commands_response::response::Cmd) -> Option<Self::Response>;
}

/// A method described as data, for routing by path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MethodInfo {
    /// The full gRPC path.
    pub path: &'static str,
    /// The fully qualified service name, e.g. `tikvpb.Tikv`.
    pub service: &'static str,
    /// The method name as the schema spells it, e.g. `KVPessimisticRollback`.
    pub name: &'static str,
    /// The streaming kind.
    pub kind: MethodKind,
    /// The BatchCommands oneof field number, for TiKV methods that have one.
    pub batch_tag: Option<u32>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::kvrpcpb::{GetRequest, GetResponse};
    use crate::tikvpb::tikv_service;
    use crate::{grpc, keyspacepb, pdpb};

    #[test]
    fn paths_keep_kvprotos_spelling() {
        assert_eq!(tikv_service::KvGet::PATH, "/tikvpb.Tikv/KvGet");
        assert_eq!(
            tikv_service::KvPessimisticRollback::PATH,
            "/tikvpb.Tikv/KVPessimisticRollback"
        );
        assert_eq!(
            tikv_service::RawCompareAndSwap::PATH,
            "/tikvpb.Tikv/RawCompareAndSwap"
        );
        assert_eq!(
            pdpb::pd_service::GetRegionById::PATH,
            "/pdpb.PD/GetRegionByID"
        );
        assert_eq!(
            keyspacepb::keyspace_service::LoadKeyspaceById::PATH,
            "/keyspacepb.Keyspace/LoadKeyspaceByID"
        );
        assert_eq!(
            grpc::health::v1::health_service::Check::PATH,
            "/grpc.health.v1.Health/Check"
        );
    }

    #[test]
    fn streaming_kinds() {
        assert_eq!(tikv_service::BatchCommands::KIND, MethodKind::BidiStreaming);
        assert_eq!(
            tikv_service::CoprocessorStream::KIND,
            MethodKind::ServerStreaming
        );
        assert_eq!(pdpb::pd_service::Tso::KIND, MethodKind::BidiStreaming);
        assert_eq!(pdpb::pd_service::GetMembers::KIND, MethodKind::Unary);
        assert_eq!(
            MethodKind::from_streaming(true, false),
            MethodKind::ClientStreaming
        );
    }

    #[test]
    fn batch_variants_round_trip() {
        let request = GetRequest {
            key: "k".into(),
            version: 7,
            ..Default::default()
        };
        match tikv_service::KvGet::into_batch(request.clone()) {
            batch_commands_request::request::Cmd::Get(r) => assert_eq!(r, request),
            other => panic!("wrong variant {other:?}"),
        }
        let response = GetResponse {
            value: "v".into(),
            ..Default::default()
        };
        let cmd = batch_commands_response::response::Cmd::Get(response.clone());
        assert_eq!(tikv_service::KvGet::from_batch(cmd.clone()), Some(response));
        assert_eq!(tikv_service::KvScan::from_batch(cmd), None);
        assert_eq!(tikv_service::KvPessimisticLock::BATCH_TAG, 23);
        assert_eq!(tikv_service::GetHealthFeedback::BATCH_TAG, 39);
    }

    #[test]
    fn method_lists_are_consistent() {
        let all: Vec<&MethodInfo> = tikv_service::METHODS
            .iter()
            .chain(pdpb::pd_service::METHODS)
            .chain(keyspacepb::keyspace_service::METHODS)
            .chain(crate::resource_manager::resource_manager_service::METHODS)
            .chain(crate::deadlock::deadlock_service::METHODS)
            .chain(grpc::health::v1::health_service::METHODS)
            .collect();
        let paths: BTreeSet<_> = all.iter().map(|m| m.path).collect();
        assert_eq!(paths.len(), all.len(), "duplicate paths");
        for m in &all {
            assert_eq!(m.path, format!("/{}/{}", m.service, m.name));
        }
        // Only unary TiKV methods ride in BatchCommands, each on its own oneof tag.
        let tags: Vec<u32> = tikv_service::METHODS
            .iter()
            .filter_map(|m| m.batch_tag)
            .collect();
        assert_eq!(tags.iter().collect::<BTreeSet<_>>().len(), tags.len());
        assert!(
            tags.len() >= 30,
            "expected the batchable TiKV methods, got {}",
            tags.len()
        );
        let cop = tikv_service::METHODS
            .iter()
            .find(|m| m.name == "CoprocessorStream")
            .unwrap();
        assert_eq!(cop.batch_tag, None);
        let raw_get = tikv_service::METHODS
            .iter()
            .find(|m| m.name == "RawGet")
            .unwrap();
        assert_eq!(raw_get.batch_tag, Some(13));
    }
}

//! Counters the benchmarks and tests read: RPCs per method, BatchCommands traffic, TSO load.

use std::collections::BTreeMap;

/// Request counts since the cluster was created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests per gRPC method name (unary calls and BatchCommands sub-requests alike).
    pub rpcs: BTreeMap<String, u64>,
    /// `BatchCommandsRequest` messages received.
    pub batch_messages: u64,
    /// Sub-requests carried by those messages.
    pub batch_requests: u64,
    /// TSO requests served.
    pub tso_requests: u64,
    /// Timestamps handed out by those requests (the sum of their counts).
    pub tso_timestamps: u64,
}

impl Counters {
    pub(crate) fn rpc(&mut self, method: &str) {
        *self.rpcs.entry(method.to_owned()).or_default() += 1;
    }

    /// Requests seen for one method.
    pub fn rpcs_of(&self, method: &str) -> u64 {
        self.rpcs.get(method).copied().unwrap_or(0)
    }
}

//! gRPC over HTTP/2, written directly on the `h2` crate: the pure codec, the client
//! ([`Channel`]) and the server ([`serve_connection`]).

pub mod client;
pub mod codec;
pub mod server;

pub use client::{CallError, Channel, ChannelConfig, Receiver, Sender};
pub use codec::Status;
pub use server::{Requests, Responses, ServerConfig, Service, serve_connection};

//! How a request can fail outside of its response message.
//!
//! TiKV and PD report most problems inside the response (`region_error`, `error`, a PD header
//! error). A few failures have no response at all: the store is unreachable, the request is
//! malformed, the method does not exist, the reply was lost after the write was applied. Those
//! are a [`MockError`], which a front turns into a gRPC status or a dropped connection.

use std::fmt;

/// The gRPC status codes the mock produces (numbering as in the gRPC spec).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// 2: an error the server does not classify (PD's `ErrUnknown`, e.g. a TSO failure).
    Unknown = 2,
    /// 3: the request cannot be decoded, or TiKV rejects its cluster id.
    InvalidArgument = 3,
    /// 9: PD rejects a request whose header carries another cluster id.
    FailedPrecondition = 9,
    /// 12: no such method.
    Unimplemented = 12,
    /// 14: the server cannot be reached or is not serving.
    Unavailable = 14,
}

impl Code {
    /// The numeric value sent in `grpc-status`.
    pub const fn as_i32(self) -> i32 {
        self as i32
    }
}

/// What a front should do with a [`MockError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// Answer the call with the gRPC status; nothing was applied.
    Status,
    /// Behave as if the store could not be reached (refuse or reset the connection); nothing
    /// was applied, so a client may safely resend.
    Unreachable,
    /// The request **was applied** but its reply is lost: drop the reply (reset the stream or
    /// never answer). The client cannot know whether the write happened.
    ReplyLost,
}

/// A failure that replaces the whole response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MockError {
    /// The gRPC status code a front reports if it reports a status at all.
    pub code: Code,
    /// The status message, as the real server words it.
    pub message: String,
    /// How the front should surface the failure.
    pub kind: FailureKind,
}

impl MockError {
    /// A plain gRPC status.
    pub fn status(code: Code, message: impl Into<String>) -> Self {
        MockError {
            code,
            message: message.into(),
            kind: FailureKind::Status,
        }
    }

    /// The store (or PD) cannot be reached; nothing was applied.
    pub fn unreachable(message: impl Into<String>) -> Self {
        MockError {
            code: Code::Unavailable,
            message: message.into(),
            kind: FailureKind::Unreachable,
        }
    }

    /// The request was applied but the reply never arrives.
    pub fn reply_lost() -> Self {
        MockError {
            code: Code::Unavailable,
            message: "reply lost after the request was applied".to_owned(),
            kind: FailureKind::ReplyLost,
        }
    }

    /// No handler for this gRPC path.
    pub fn unimplemented(path: &str) -> Self {
        MockError::status(Code::Unimplemented, format!("unknown method {path}"))
    }

    /// The request body is not a valid message of the method's request type.
    pub fn undecodable(path: &str, err: &prost::DecodeError) -> Self {
        MockError::status(
            Code::InvalidArgument,
            format!("cannot decode request of {path}: {err}"),
        )
    }
}

impl fmt::Display for MockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({:?}): {}", self.code, self.kind, self.message)
    }
}

impl std::error::Error for MockError {}

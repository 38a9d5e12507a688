//! TiKV's storage-level rules for RawKV requests: API version and key mode, column family,
//! TTL support and key size, with TiKV's error texts.
//!
//! These checks run in TiKV's `Storage` before or after the region checks (see each handler);
//! their failures go into the response's `error` string (`Display`), or, for the pair-list
//! responses (`RawBatchGet`, `RawScan`, `RawBatchScan`), into a single `KvPair.error.abort`
//! holding the error's `Debug` form.

use std::borrow::Cow;
use std::fmt;

use tikv_proto::kvrpcpb::{ApiVersion, Context};

use crate::codec::{encode_memcomparable, hex_upper};
use crate::config::ApiMode;

/// The storage command kinds TiKV names in its errors (`CommandKind`'s `Debug`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub(crate) enum Cmd {
    raw_get,
    raw_batch_get,
    raw_scan,
    raw_batch_scan,
    raw_put,
    raw_batch_put,
    raw_delete,
    raw_delete_range,
    raw_batch_delete,
    raw_get_key_ttl,
    raw_compare_and_swap,
    raw_atomic_store,
    raw_checksum,
}

/// Column families a RawKV request may name (API V1); V2 allows only the default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Cf {
    Default = 0,
    Lock = 1,
    Write = 2,
}

/// How a request's keys map into region key space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyCodec {
    /// API V1 raw keys are region keys as they are.
    Identity,
    /// API V2 (and transactional) keys are memcomparable-encoded in region boundaries.
    MemComparable,
}

impl KeyCodec {
    pub(crate) fn encode<'a>(self, key: &'a [u8]) -> Cow<'a, [u8]> {
        match self {
            KeyCodec::Identity => Cow::Borrowed(key),
            KeyCodec::MemComparable => Cow::Owned(encode_memcomparable(key)),
        }
    }
}

/// A storage-level failure, mirroring TiKV's `storage::ErrorInner` variants the raw path uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StorageError {
    KeyTooLarge {
        size: usize,
        limit: usize,
    },
    InvalidCf(String),
    CfDeprecated(String),
    TtlNotEnabled,
    TtlLenNotEqualsToPairs,
    ApiVersionNotMatched {
        cmd: Cmd,
        storage: ApiVersion,
        request: ApiVersion,
    },
    InvalidKeyMode {
        cmd: Cmd,
        storage: ApiVersion,
        key: String,
    },
    InvalidKeyRangeMode {
        cmd: Cmd,
        storage: ApiVersion,
        range: (Option<String>, Option<String>),
    },
    /// `box_err!` text (TiKV also prefixes the source file and line, which the mock omits).
    Other(String),
    /// The engine refused to read a key outside the region snapshot.
    KeyOutOfRegion(String),
}

fn api_name(v: ApiVersion) -> &'static str {
    match v {
        ApiVersion::V1 => "V1",
        ApiVersion::V1ttl => "V1ttl",
        ApiVersion::V2 => "V2",
        ApiVersion::V3 => "V3",
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::KeyTooLarge { size, limit } => {
                write!(f, "max key size exceeded, size: {size}, limit: {limit}")
            }
            StorageError::InvalidCf(cf) => write!(f, "invalid cf name: {cf}"),
            StorageError::CfDeprecated(cf) => {
                write!(f, "cf is deprecated in API V2, cf name: {cf}")
            }
            StorageError::TtlNotEnabled => {
                write!(f, "ttl is not enabled, but get put request with ttl")
            }
            StorageError::TtlLenNotEqualsToPairs => {
                write!(
                    f,
                    "The length of ttls does not equal to the length of pairs"
                )
            }
            StorageError::ApiVersionNotMatched {
                cmd,
                storage,
                request,
            } => write!(
                f,
                "Api version in request does not match with TiKV storage, cmd: {cmd:?}, storage: {}, request: {}",
                api_name(*storage),
                api_name(*request)
            ),
            StorageError::InvalidKeyMode { cmd, storage, key } => write!(
                f,
                "Key mode mismatched with the request mode, cmd: {cmd:?}, storage: {}, key: {key}",
                api_name(*storage)
            ),
            StorageError::InvalidKeyRangeMode {
                cmd,
                storage,
                range,
            } => write!(
                f,
                "Key mode mismatched with the request mode, cmd: {cmd:?}, storage: {}, range: {range:?}",
                api_name(*storage)
            ),
            StorageError::Other(msg) => f.write_str(msg),
            StorageError::KeyOutOfRegion(msg) => write!(f, "unknown error {msg:?}"),
        }
    }
}

impl StorageError {
    /// The `Debug` form TiKV puts into `KeyError.abort` (`Error(<ErrorInner debug>)`).
    pub(crate) fn abort_text(&self) -> String {
        let inner = match self {
            StorageError::KeyTooLarge { size, limit } => {
                format!("KeyTooLarge {{ size: {size}, limit: {limit} }}")
            }
            StorageError::InvalidCf(cf) => format!("InvalidCf({cf:?})"),
            StorageError::CfDeprecated(cf) => format!("CfDeprecated({cf:?})"),
            StorageError::TtlNotEnabled => "TtlNotEnabled".to_owned(),
            StorageError::TtlLenNotEqualsToPairs => "TtlLenNotEqualsToPairs".to_owned(),
            StorageError::ApiVersionNotMatched {
                cmd,
                storage,
                request,
            } => format!(
                "ApiVersionNotMatched {{ cmd: {cmd:?}, storage_api_version: {}, req_api_version: {} }}",
                api_name(*storage),
                api_name(*request)
            ),
            StorageError::InvalidKeyMode { cmd, storage, key } => format!(
                "InvalidKeyMode {{ cmd: {cmd:?}, storage_api_version: {}, key: {key:?} }}",
                api_name(*storage)
            ),
            StorageError::InvalidKeyRangeMode {
                cmd,
                storage,
                range,
            } => format!(
                "InvalidKeyRangeMode {{ cmd: {cmd:?}, storage_api_version: {}, range: {range:?} }}",
                api_name(*storage)
            ),
            StorageError::Other(msg) => format!("Other({msg:?})"),
            StorageError::KeyOutOfRegion(msg) => format!("Kv(Error(Other({msg:?})))"),
        };
        format!("Error({inner})")
    }
}

/// The API-version view of one request: which storage version judges it and how its keys
/// map to region key space.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestApi {
    pub(crate) storage: ApiVersion,
    pub(crate) request: ApiVersion,
}

impl RequestApi {
    pub(crate) fn new(mode: ApiMode, ctx: &Context) -> Self {
        // An out-of-range value cannot match any storage version; V3 is never served.
        let request = ApiVersion::try_from(ctx.api_version).unwrap_or(ApiVersion::V3);
        RequestApi {
            storage: mode.storage_for(request),
            request,
        }
    }

    pub(crate) fn codec(&self) -> KeyCodec {
        match self.storage {
            ApiVersion::V2 => KeyCodec::MemComparable,
            _ => KeyCodec::Identity,
        }
    }

    pub(crate) fn ttl_enabled(&self) -> bool {
        matches!(self.storage, ApiVersion::V1ttl | ApiVersion::V2)
    }

    fn mismatch(&self, cmd: Cmd) -> StorageError {
        StorageError::ApiVersionNotMatched {
            cmd,
            storage: self.storage,
            request: self.request,
        }
    }

    /// TiKV's `check_api_version` for raw commands.
    pub(crate) fn check_keys<'a>(
        &self,
        cmd: Cmd,
        keys: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), StorageError> {
        match (self.storage, self.request) {
            (ApiVersion::V1, ApiVersion::V1) | (ApiVersion::V1ttl, ApiVersion::V1) => Ok(()),
            (ApiVersion::V2, ApiVersion::V2) => {
                for key in keys {
                    if key.first() != Some(&b'r') {
                        return Err(StorageError::InvalidKeyMode {
                            cmd,
                            storage: self.storage,
                            key: hex_upper(key),
                        });
                    }
                }
                Ok(())
            }
            _ => Err(self.mismatch(cmd)),
        }
    }

    /// TiKV's `check_api_version_ranges` for raw commands; `None` is an unbounded end.
    pub(crate) fn check_ranges<'a>(
        &self,
        cmd: Cmd,
        ranges: impl IntoIterator<Item = (Option<&'a [u8]>, Option<&'a [u8]>)>,
    ) -> Result<(), StorageError> {
        match (self.storage, self.request) {
            (ApiVersion::V1, ApiVersion::V1) | (ApiVersion::V1ttl, ApiVersion::V1) => Ok(()),
            (ApiVersion::V2, ApiVersion::V2) => {
                for (start, end) in ranges {
                    // V2 judges a range by both ends: same mode byte, or the end is exactly
                    // the next mode byte (the whole key space of the mode).
                    let raw = match (start, end) {
                        (Some(s), Some(e)) if !s.is_empty() && !e.is_empty() => {
                            (s[0] == e[0] || e == [s[0].wrapping_add(1)]) && s[0] == b'r'
                        }
                        _ => false,
                    };
                    if !raw {
                        return Err(StorageError::InvalidKeyRangeMode {
                            cmd,
                            storage: self.storage,
                            range: (start.map(hex_upper), end.map(hex_upper)),
                        });
                    }
                }
                Ok(())
            }
            _ => Err(self.mismatch(cmd)),
        }
    }

    /// TiKV's `rawkv_cf`: the empty name is the default CF.
    pub(crate) fn cf(&self, cf: &str) -> Result<Cf, StorageError> {
        match self.storage {
            ApiVersion::V2 => {
                if cf.is_empty() {
                    Ok(Cf::Default)
                } else {
                    Err(StorageError::CfDeprecated(cf.to_owned()))
                }
            }
            ApiVersion::V3 => Err(StorageError::Other(
                "API V3 is not supported by this TiKV build".to_owned(),
            )),
            _ => match cf {
                "" | "default" => Ok(Cf::Default),
                "lock" => Ok(Cf::Lock),
                "write" => Ok(Cf::Write),
                other => Err(StorageError::InvalidCf(other.to_owned())),
            },
        }
    }
}

/// TiKV's `check_key_size`: writes with a key longer than `max-key-size` are refused.
pub(crate) fn check_key_size<'a>(
    keys: impl IntoIterator<Item = &'a [u8]>,
    limit: usize,
) -> Result<(), StorageError> {
    for k in keys {
        if k.len() > limit {
            return Err(StorageError::KeyTooLarge {
                size: k.len(),
                limit,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(mode: ApiMode, v: ApiVersion) -> RequestApi {
        RequestApi::new(
            mode,
            &Context {
                api_version: v as i32,
                ..Default::default()
            },
        )
    }

    #[test]
    fn v1_storage_rejects_v2_requests_with_tikv_text() {
        let e = api(ApiMode::V1, ApiVersion::V2)
            .check_keys(Cmd::raw_get, [&b"rk"[..]])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Api version in request does not match with TiKV storage, cmd: raw_get, storage: V1, request: V2"
        );
    }

    #[test]
    fn v1ttl_storage_rejects_v1ttl_requests() {
        assert!(
            api(ApiMode::V1Ttl, ApiVersion::V1)
                .check_keys(Cmd::raw_put, [&b"k"[..]])
                .is_ok()
        );
        assert!(
            api(ApiMode::V1Ttl, ApiVersion::V1ttl)
                .check_keys(Cmd::raw_put, [&b"k"[..]])
                .is_err()
        );
    }

    #[test]
    fn v2_raw_keys_need_r_prefix() {
        let a = api(ApiMode::V2, ApiVersion::V2);
        assert!(a.check_keys(Cmd::raw_get, [&b"r\0\0\0k"[..]]).is_ok());
        let e = a.check_keys(Cmd::raw_get, [&b"xk"[..]]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Key mode mismatched with the request mode, cmd: raw_get, storage: V2, key: 786B"
        );
    }

    #[test]
    fn v2_ranges_need_both_ends_in_raw_mode() {
        let a = api(ApiMode::V2, ApiVersion::V2);
        assert!(
            a.check_ranges(Cmd::raw_scan, [(Some(&b"ra"[..]), Some(&b"rb"[..]))])
                .is_ok()
        );
        assert!(
            a.check_ranges(Cmd::raw_scan, [(Some(&b"r"[..]), Some(&b"s"[..]))])
                .is_ok()
        );
        let e = a
            .check_ranges(Cmd::raw_scan, [(Some(&b"ra"[..]), None)])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Key mode mismatched with the request mode, cmd: raw_scan, storage: V2, range: (Some(\"7261\"), None)"
        );
    }

    #[test]
    fn cf_names_follow_api_version() {
        let v1 = api(ApiMode::V1, ApiVersion::V1);
        assert_eq!(v1.cf("").unwrap(), Cf::Default);
        assert_eq!(v1.cf("write").unwrap(), Cf::Write);
        assert_eq!(
            v1.cf("foo").unwrap_err().to_string(),
            "invalid cf name: foo"
        );
        assert_eq!(
            v1.cf("foo").unwrap_err().abort_text(),
            "Error(InvalidCf(\"foo\"))"
        );
        let v2 = api(ApiMode::V2, ApiVersion::V2);
        assert_eq!(
            v2.cf("default").unwrap_err().to_string(),
            "cf is deprecated in API V2, cf name: default"
        );
    }

    #[test]
    fn mixed_mode_serves_v1_as_v1ttl_and_v2_as_v2() {
        assert_eq!(
            api(ApiMode::V1AndV2, ApiVersion::V1).storage,
            ApiVersion::V1ttl
        );
        assert_eq!(
            api(ApiMode::V1AndV2, ApiVersion::V2).storage,
            ApiVersion::V2
        );
        assert_eq!(
            api(ApiMode::V1AndV2, ApiVersion::V2).codec(),
            KeyCodec::MemComparable
        );
    }

    #[test]
    fn key_size_limit_is_inclusive() {
        assert!(check_key_size([&[0u8; 8][..]], 8).is_ok());
        assert_eq!(
            check_key_size([&[0u8; 9][..]], 8).unwrap_err().to_string(),
            "max key size exceeded, size: 9, limit: 8"
        );
    }
}

//! API V2 keyspaces: how the keys a caller uses become the keys TiKV stores, and back.
//!
//! Under API V2 every key lives in a keyspace and is stored behind a four-byte prefix: a mode
//! byte (`r` for RawKV, `x` for transactions) and the keyspace id in 24 bits. The plans apply
//! a [`KeyspaceCodec`] themselves (taken from the [`Config`]): they prefix the keys and bound
//! the ranges they are given, and strip the prefix from every key they return, in pairs and
//! in errors alike. Everything between (routing, requests, lock resolution) sees stored keys
//! only, so a lock's primary key, read from a server reply, is used as it is.
//!
//! Under API V1 the codec is the identity and costs nothing.

use crate::codec::KeyspacePrefix;
use crate::config::{ApiVersion, Config, KeyMode};
use crate::error::Error;
use crate::key::{Key, KeyRange};
use crate::raw::KvPair;

/// Maps user keys to stored keys for one client: identity under API V1, the keyspace prefix
/// of the client's mode under API V2.
///
/// ```
/// use tikv_core::{ApiVersion, Config, Key, KeyMode};
///
/// // As a transactional client in keyspace 1 runs it.
/// let config = Config::default()
///     .with_api_version(ApiVersion::V2)
///     .bind(KeyMode::Txn, Some(1));
/// let codec = config.keyspace_codec();
/// let stored = codec.encode(Key::from("k"));
/// assert_eq!(stored.as_bytes(), b"x\0\0\x01k");
/// assert_eq!(codec.decode(stored).unwrap(), Key::from("k"));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyspaceCodec {
    prefix: Option<KeyspacePrefix>,
}

impl KeyspaceCodec {
    /// The identity (API V1).
    pub const NONE: KeyspaceCodec = KeyspaceCodec { prefix: None };

    /// The codec of `config`: its keyspace's prefix for its key mode under API V2 (keyspace
    /// 0, `DEFAULT`, until the client has looked its keyspace up).
    pub fn of(config: &Config) -> Self {
        let prefix = match config.api_version {
            ApiVersion::V1 => None,
            ApiVersion::V2 => {
                let id = config.keyspace_id().unwrap_or(0);
                Some(match config.key_mode() {
                    KeyMode::Raw => KeyspacePrefix::raw(id),
                    KeyMode::Txn => KeyspacePrefix::txn(id),
                })
            }
        };
        KeyspaceCodec { prefix }
    }

    /// The prefix every stored key carries, if any.
    pub fn prefix(&self) -> Option<&KeyspacePrefix> {
        self.prefix.as_ref()
    }

    /// The stored form of a user key.
    pub fn encode(&self, key: Key) -> Key {
        match &self.prefix {
            None => key,
            Some(p) => p.encode(&key),
        }
    }

    /// The stored forms of user keys, in the same order (the prefix keeps key order).
    pub fn encode_all(&self, keys: Vec<Key>) -> Vec<Key> {
        match self.prefix {
            None => keys,
            Some(_) => keys.into_iter().map(|k| self.encode(k)).collect(),
        }
    }

    /// The stored form of a user range, bounded to the keyspace: an unbounded end becomes
    /// the keyspace's end, so a scan never leaves it.
    pub fn encode_range(&self, range: KeyRange) -> KeyRange {
        match &self.prefix {
            None => range,
            Some(p) => p.encode_range(&range),
        }
    }

    /// The user key of a stored key TiKV returned. A key outside the keyspace can only come
    /// from a server bug; it is an error naming the key, never passed on as a user key.
    pub fn decode(&self, stored: Key) -> Result<Key, Error> {
        let Some(p) = &self.prefix else {
            return Ok(stored);
        };
        if stored.as_bytes().starts_with(p.as_bytes()) {
            Ok(Key::from(stored.into_bytes().slice(p.as_bytes().len()..)))
        } else {
            Err(Error::KeyError {
                message: format!(
                    "TiKV returned a key outside keyspace {:?}",
                    Key::from(&p.as_bytes()[..])
                ),
                key: stored,
            })
        }
    }

    /// The user forms of the pairs TiKV returned.
    pub fn decode_pairs(&self, pairs: Vec<KvPair>) -> Result<Vec<KvPair>, Error> {
        if self.prefix.is_none() {
            return Ok(pairs);
        }
        pairs
            .into_iter()
            .map(|p| {
                Ok(KvPair {
                    key: self.decode(p.key)?,
                    value: p.value,
                })
            })
            .collect()
    }

    /// `error` with the keys it names in their user form, so a caller sees the key it wrote
    /// (keys outside the keyspace, such as an empty placeholder, stay as they are).
    pub fn decode_error(&self, error: Error) -> Error {
        if self.prefix.is_none() {
            return error;
        }
        let user = |k: Key| self.decode(k.clone()).unwrap_or(k);
        match error {
            Error::KeyError { key, message } => Error::KeyError {
                key: user(key),
                message,
            },
            Error::KeyExists { key } => Error::KeyExists { key: user(key) },
            Error::EntryTooLarge { key, size, limit } => Error::EntryTooLarge {
                key: user(key),
                size,
                limit,
            },
            Error::AssertionFailed {
                key,
                expected_exists,
                existing_start_ts,
                existing_commit_ts,
            } => Error::AssertionFailed {
                key: user(key),
                expected_exists,
                existing_start_ts,
                existing_commit_ts,
            },
            Error::LockWaitTimeout { key, lock_ts } => Error::LockWaitTimeout {
                key: user(key),
                lock_ts,
            },
            Error::LockAcquireFailAndNoWaitSet { key, lock_ts } => {
                Error::LockAcquireFailAndNoWaitSet {
                    key: user(key),
                    lock_ts,
                }
            }
            Error::Deadlock {
                key,
                lock_ts,
                deadlock_key_hash,
                wait_chain,
                deadlock_key,
                retryable,
            } => Error::Deadlock {
                key: user(key),
                lock_ts,
                deadlock_key_hash,
                wait_chain: wait_chain
                    .into_iter()
                    .map(|(t, w, k)| (t, w, user(k)))
                    .collect(),
                deadlock_key: deadlock_key.map(user),
                retryable,
            },
            Error::WriteConflict {
                key,
                primary,
                start_ts,
                conflict_ts,
                conflict_commit_ts,
                reason,
            } => Error::WriteConflict {
                key: user(key),
                primary: user(primary),
                start_ts,
                conflict_ts,
                conflict_commit_ts,
                reason,
            },
            Error::BackoffExhausted {
                operation,
                reason,
                attempts,
                slept,
                budget,
                recent,
                last,
            } => Error::BackoffExhausted {
                operation,
                reason,
                attempts,
                slept,
                budget,
                recent,
                last: Box::new(self.decode_error(*last)),
            },
            other => other,
        }
    }

    /// A result with its error's keys in user form.
    pub fn decode_result<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        result.map_err(|e| self.decode_error(e))
    }
}

impl Config {
    /// The keyspace codec the plans apply (see [`KeyspaceCodec`]).
    pub fn keyspace_codec(&self) -> KeyspaceCodec {
        KeyspaceCodec::of(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(mode: KeyMode, id: u32) -> KeyspaceCodec {
        Config::default()
            .with_api_version(ApiVersion::V2)
            .bind(mode, Some(id))
            .keyspace_codec()
    }

    #[test]
    fn api_v1_is_the_identity() {
        let codec = Config::default().keyspace_codec();
        assert_eq!(codec, KeyspaceCodec::NONE);
        assert_eq!(codec.encode(Key::from("k")), Key::from("k"));
        assert_eq!(codec.encode_range(KeyRange::all()), KeyRange::all());
        assert_eq!(codec.decode(Key::from("xyz")).unwrap(), Key::from("xyz"));
    }

    #[test]
    fn api_v2_prefixes_by_mode_and_keyspace() {
        assert_eq!(
            v2(KeyMode::Raw, 0x010203).encode(Key::from("k")).as_bytes(),
            b"r\x01\x02\x03k"
        );
        assert_eq!(
            v2(KeyMode::Txn, 7).encode(Key::from("k")).as_bytes(),
            b"x\0\0\x07k"
        );
        // Before the keyspace is looked up, DEFAULT (0).
        let unresolved = Config::default()
            .with_api_version(ApiVersion::V2)
            .bind(KeyMode::Txn, None);
        assert_eq!(unresolved.keyspace_codec(), v2(KeyMode::Txn, 0));
    }

    #[test]
    fn ranges_stay_inside_the_keyspace() {
        let codec = v2(KeyMode::Txn, 1);
        let all = codec.encode_range(KeyRange::all());
        assert_eq!(all.start().as_bytes(), b"x\0\0\x01");
        assert_eq!(all.end().as_bytes(), b"x\0\0\x02");
        let some = codec.encode_range(KeyRange::new("a", "c"));
        assert_eq!(some.start().as_bytes(), b"x\0\0\x01a");
        assert_eq!(some.end().as_bytes(), b"x\0\0\x01c");
    }

    #[test]
    fn decoding_strips_the_prefix_and_refuses_foreign_keys() {
        let codec = v2(KeyMode::Txn, 1);
        assert_eq!(
            codec.decode(Key::from(&b"x\0\0\x01k"[..])).unwrap(),
            Key::from("k")
        );
        let foreign = Key::from(&b"x\0\0\x02k"[..]);
        let e = codec.decode(foreign.clone()).unwrap_err();
        assert!(
            matches!(&e, Error::KeyError { key, .. } if *key == foreign),
            "{e}"
        );
        let pairs = vec![KvPair {
            key: Key::from(&b"x\0\0\x01a"[..]),
            value: "1".into(),
        }];
        assert_eq!(codec.decode_pairs(pairs).unwrap()[0].key, Key::from("a"));
    }

    #[test]
    fn errors_name_user_keys() {
        let codec = v2(KeyMode::Txn, 1);
        let stored = |k: &str| codec.encode(Key::from(k));
        let conflict = Error::WriteConflict {
            key: stored("k"),
            primary: stored("p"),
            start_ts: 1,
            conflict_ts: 2,
            conflict_commit_ts: 3,
            reason: "Optimistic".into(),
        };
        let exhausted = Error::BackoffExhausted {
            operation: "commit",
            reason: "txnLock",
            attempts: 1,
            slept: std::time::Duration::ZERO,
            budget: std::time::Duration::ZERO,
            recent: String::new(),
            last: Box::new(Error::KeyExists { key: stored("e") }),
        };
        match codec.decode_error(conflict) {
            Error::WriteConflict { key, primary, .. } => {
                assert_eq!((key, primary), (Key::from("k"), Key::from("p")));
            }
            other => panic!("{other}"),
        }
        match codec.decode_error(exhausted) {
            Error::BackoffExhausted { last, .. } => {
                assert_eq!(
                    *last,
                    Error::KeyExists {
                        key: Key::from("e")
                    }
                );
            }
            other => panic!("{other}"),
        }
        // A placeholder key outside the keyspace stays as it is.
        let placeholder = Error::KeyError {
            key: Key::EMPTY,
            message: "m".into(),
        };
        assert_eq!(codec.decode_error(placeholder.clone()), placeholder);
    }
}

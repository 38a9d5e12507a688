//! Streamed scans: a range read page by page, each page one bounded scan, so a scan of any
//! size holds one page of pairs in memory at a time.

use std::collections::VecDeque;
use std::future::Future;

use futures_util::stream::{self, Stream};
use tikv_core::raw::KvPair;
use tikv_core::{KeyRange, Result};

/// Pairs per page of a streamed scan (client-go's `scanBatchSize`).
pub const SCAN_PAGE: u32 = 256;

/// One page of a streamed scan: its pairs, in scan order, and what is left of the range.
pub(crate) struct Page {
    pub(crate) pairs: Vec<KvPair>,
    /// `None` once the range is exhausted.
    pub(crate) rest: Option<KeyRange>,
}

impl Page {
    /// The page a scan of `range` for at most `limit` pairs returned: a full page may have
    /// stopped early, so the rest is what lies beyond its last pair.
    pub(crate) fn of(range: &KeyRange, pairs: Vec<KvPair>, limit: u32, reverse: bool) -> Page {
        let full = pairs.len() >= limit as usize;
        let rest = match pairs.last() {
            // Nothing comes before the empty key.
            Some(last) if full && !(reverse && last.key.is_empty()) => {
                Some(range.after(&last.key, reverse))
            }
            _ => None,
        };
        Page { pairs, rest }
    }
}

/// The pairs of `range`, fetched a page at a time by `fetch` (given what is left of the
/// range). The stream ends after the last page or after the first error.
pub(crate) fn paged<'a, F, Fut>(
    range: KeyRange,
    fetch: F,
) -> impl Stream<Item = Result<KvPair>> + Send + 'a
where
    F: FnMut(KeyRange) -> Fut + Send + 'a,
    Fut: Future<Output = Result<Page>> + Send + 'a,
{
    struct State<F> {
        fetch: F,
        rest: Option<KeyRange>,
        buffered: VecDeque<KvPair>,
        started: bool,
    }
    let state = State {
        fetch,
        rest: Some(range),
        buffered: VecDeque::new(),
        started: false,
    };
    stream::unfold(state, |mut st| async move {
        loop {
            if let Some(pair) = st.buffered.pop_front() {
                return Some((Ok(pair), st));
            }
            let range = st.rest.take()?;
            // What is left after a page may be empty; the caller's range goes to `fetch`
            // as given, so that an inverted one is reported.
            if st.started && range.is_empty() {
                return None;
            }
            st.started = true;
            match (st.fetch)(range).await {
                Ok(page) => {
                    st.rest = page.rest;
                    st.buffered = page.pairs.into();
                }
                // `rest` stays `None`: the error is the stream's last item.
                Err(e) => return Some((Err(e), st)),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use std::future::ready;
    use tikv_core::{Error, Key};

    use super::*;

    fn pairs(keys: &[&str]) -> Vec<KvPair> {
        keys.iter()
            .map(|k| KvPair {
                key: Key::from(*k),
                value: bytes::Bytes::new(),
            })
            .collect()
    }

    /// A fake store holding `data`, read in pages of `page`.
    fn fetch_from(
        data: Vec<&'static str>,
        page: u32,
        reverse: bool,
    ) -> impl FnMut(KeyRange) -> std::future::Ready<Result<Page>> {
        move |range: KeyRange| {
            let mut keys: Vec<&str> = data
                .iter()
                .copied()
                .filter(|k| range.contains(&Key::from(*k)))
                .collect();
            if reverse {
                keys.reverse();
            }
            keys.truncate(page as usize);
            ready(Ok(Page::of(&range, pairs(&keys), page, reverse)))
        }
    }

    fn collect(s: impl Stream<Item = Result<KvPair>>) -> Vec<String> {
        let keys = s.map(|r| String::from_utf8(r.unwrap().key.to_bytes().to_vec()).unwrap());
        futures_executor_lite(keys.collect())
    }

    /// Polls a future that never waits (the fakes here are all ready).
    fn futures_executor_lite<T>(f: impl Future<Output = T>) -> T {
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("a fake fetch waited"),
        }
    }

    #[test]
    fn pages_cover_the_range_in_order_both_ways() {
        let data = vec!["a", "b", "c", "d", "e", "f", "g"];
        let all = KeyRange::new("b", "g");
        let forward = collect(paged(all.clone(), fetch_from(data.clone(), 2, false)));
        assert_eq!(forward, ["b", "c", "d", "e", "f"]);
        let backward = collect(paged(all, fetch_from(data.clone(), 2, true)));
        assert_eq!(backward, ["f", "e", "d", "c", "b"]);
        // A range that ends exactly at a page boundary asks once more and gets nothing.
        let exact = collect(paged(KeyRange::new("a", "e"), fetch_from(data, 2, false)));
        assert_eq!(exact, ["a", "b", "c", "d"]);
    }

    #[test]
    fn an_error_ends_the_stream() {
        let mut calls = 0;
        let fetch = move |range: KeyRange| {
            calls += 1;
            ready(if calls == 1 {
                Ok(Page::of(&range, pairs(&["a", "b"]), 2, false))
            } else {
                Err(Error::Cancelled("store went away".into()))
            })
        };
        let items: Vec<Result<KvPair>> =
            futures_executor_lite(paged(KeyRange::all(), fetch).collect());
        assert_eq!(items.len(), 3);
        assert!(matches!(items[2], Err(Error::Cancelled(_))));
    }
}

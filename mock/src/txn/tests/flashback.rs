//! Flashback: prepare locks the region (other requests refused, older reads served), the
//! flashback rewrites what changed since the version and releases the region; an unprepared
//! region with changes answers `FlashbackNotPrepared`; retries are harmless.

use super::*;

impl T {
    fn prepare(
        &mut self,
        start_ts: u64,
        version: u64,
    ) -> kvrpcpb::PrepareFlashbackToVersionResponse {
        let (s, ctx) = self.ctx("a");
        let req = kvrpcpb::PrepareFlashbackToVersionRequest {
            context: Some(ctx),
            start_ts,
            version,
            ..Default::default()
        };
        self.c
            .tikv::<t::KvPrepareFlashbackToVersion>(s, req, NOW)
            .unwrap()
    }

    fn flashback(
        &mut self,
        start_ts: u64,
        commit_ts: u64,
        version: u64,
    ) -> kvrpcpb::FlashbackToVersionResponse {
        let (s, ctx) = self.ctx("a");
        let req = kvrpcpb::FlashbackToVersionRequest {
            context: Some(ctx),
            start_ts,
            commit_ts,
            version,
            ..Default::default()
        };
        self.c.tikv::<t::KvFlashbackToVersion>(s, req, NOW).unwrap()
    }
}

#[test]
fn a_prepared_region_refuses_requests_but_serves_older_reads() {
    let mut x = T::new();
    x.write("a", "1", ts(10, 0), ts(11, 0));
    x.write("a", "2", ts(20, 0), ts(21, 0));
    let r = x.prepare(ts(30, 0), ts(12, 0));
    assert!(r.region_error.is_none() && r.error.is_empty(), "{r:?}");
    let refused = x.get("a", ts(31, 0));
    let e = refused.region_error.expect("refused");
    assert_eq!(
        e.flashback_in_progress.map(|f| f.flashback_start_ts),
        Some(ts(30, 0))
    );
    assert_eq!(
        x.get("a", ts(25, 0)).value,
        b("2"),
        "a read below the start ts"
    );
    let w = x.prewrite(pw(vec![put("a", "3")], "a", ts(32, 0)));
    assert!(
        w.region_error
            .is_some_and(|e| e.flashback_in_progress.is_some())
    );
    // Preparing again is harmless.
    assert!(x.prepare(ts(30, 0), ts(12, 0)).error.is_empty());

    let r = x.flashback(ts(30, 0), ts(40, 0), ts(12, 0));
    assert!(r.region_error.is_none() && r.error.is_empty(), "{r:?}");
    assert_eq!(x.get("a", ts(41, 0)).value, b("1"), "back to the version");
    // A retry after it finished succeeds; the region serves again.
    let r = x.flashback(ts(30, 0), ts(40, 0), ts(12, 0));
    assert!(r.region_error.is_none() && r.error.is_empty(), "{r:?}");
    assert!(x.get("a", ts(50, 0)).region_error.is_none());
}

#[test]
fn prepare_rolls_back_other_locks_and_an_unprepared_flashback_is_refused() {
    let mut x = T::new();
    x.write("a", "1", ts(10, 0), ts(11, 0));
    x.write("b", "1", ts(12, 0), ts(13, 0));
    // Nothing changed since 13: an unprepared flashback has nothing to do.
    let r = x.flashback(ts(30, 0), ts(40, 0), ts(14, 0));
    assert!(r.region_error.is_none() && r.error.is_empty(), "{r:?}");
    // A change since 11: unprepared, it is refused.
    let r = x.flashback(ts(31, 0), ts(41, 0), ts(11, 0));
    assert!(
        r.region_error
            .is_some_and(|e| e.flashback_not_prepared.is_some())
    );

    let live = x.prewrite(pw(vec![put("c", "x")], "c", ts(20, 0)));
    assert!(live.errors.is_empty());
    assert!(x.prepare(ts(50, 0), ts(11, 0)).error.is_empty());
    let r = x.flashback(ts(50, 0), ts(60, 0), ts(11, 0));
    assert!(r.error.is_empty() && r.region_error.is_none(), "{r:?}");
    assert!(
        x.get("c", ts(70, 0)).value.is_empty(),
        "the live lock was rolled back"
    );
    assert!(
        x.get("b", ts(70, 0)).not_found,
        "b did not exist at the version"
    );
    assert_eq!(x.get("a", ts(70, 0)).value, b("1"));
    // A commit ts not above the start ts is refused as a storage error.
    let r = x.flashback(ts(80, 0), ts(80, 0), ts(11, 0));
    assert!(r.error.contains("InvalidTxnTso"), "{r:?}");
}

//! Range tasks (client-go's `rangetask`): a long key range cut into tasks of about
//! [`REGIONS_PER_TASK`] regions each, so that operations over the whole key space (GC's lock
//! sweep, delete range) run as several concurrent walks.
//!
//! The cut is made from what PD lists ([`next_task`]); each task then walks its own regions
//! (splits and merges after the cut only change how many regions a task meets, never which
//! keys it covers, because tasks are key ranges).

use crate::error::Error;
use crate::key::KeyRange;
use crate::pd::PdErrorKind;
use crate::region::Region;

/// Regions per task (client-go's `defaultRegionsPerTask`).
pub const REGIONS_PER_TASK: usize = 128;

/// Concurrent tasks by default (client-go's GC: 8).
pub const DEFAULT_CONCURRENCY: usize = 8;

/// The first task of `rest` given the regions PD (member `pd`, named in errors) listed from
/// its start (in key order, at most [`REGIONS_PER_TASK`]): from `rest`'s start to the end of
/// the last listed region, clamped to `rest`'s end. Returns the task and what is left after
/// it (`None` when the task reaches the end).
///
/// ```
/// use tikv_core::range_task::next_task;
/// use tikv_core::testing::region;
/// use tikv_core::KeyRange;
///
/// let rest = KeyRange::new("a", "z");
/// let listed = [region(1, "", "f", &[1]), region(2, "f", "k", &[1])];
/// let (task, left) = next_task(&rest, &listed, "pd-1").unwrap();
/// assert_eq!(task, KeyRange::new("a", "k"));
/// assert_eq!(left, Some(KeyRange::new("k", "z")));
/// ```
pub fn next_task(
    rest: &KeyRange,
    regions: &[Region],
    pd: &str,
) -> Result<(KeyRange, Option<KeyRange>), Error> {
    let error = |kind, message| Error::Pd {
        method: "ScanRegions",
        address: pd.to_string(),
        kind,
        message,
    };
    let Some(last) = regions.last() else {
        return Err(error(
            PdErrorKind::NotFound,
            format!("no region from {}", rest.start()),
        ));
    };
    let end = last.range.end();
    let reaches_end =
        end.is_empty() || (!rest.end().is_empty() && end.as_bytes() >= rest.end().as_bytes());
    if reaches_end {
        return Ok((rest.clone(), None));
    }
    if end.as_bytes() <= rest.start().as_bytes() {
        return Err(error(
            PdErrorKind::InvalidResponse,
            format!(
                "region {} ends at {end}, before the range start {}",
                last.id,
                rest.start()
            ),
        ));
    }
    Ok((
        KeyRange::new(rest.start().clone(), end.clone()),
        Some(KeyRange::new(end.clone(), rest.end().clone())),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::region;

    #[test]
    fn a_task_ends_where_the_listed_regions_end() {
        let rest = KeyRange::new("b", "");
        let (task, left) = next_task(&rest, &[region(1, "a", "c", &[1])], "pd").unwrap();
        assert_eq!(task, KeyRange::new("b", "c"));
        assert_eq!(left, Some(KeyRange::new("c", "")));
    }

    #[test]
    fn the_last_task_is_clamped_to_the_range() {
        let rest = KeyRange::new("b", "d");
        let (task, left) = next_task(&rest, &[region(1, "a", "x", &[1])], "pd").unwrap();
        assert_eq!((task, left), (rest, None));
        let rest = KeyRange::new("b", "");
        let (task, left) = next_task(&rest, &[region(1, "a", "", &[1])], "pd").unwrap();
        assert_eq!(
            (task, left),
            (rest, None),
            "an unbounded range ends with the last region"
        );
    }

    #[test]
    fn no_region_or_one_behind_the_start_is_an_error() {
        let rest = KeyRange::new("m", "");
        assert!(next_task(&rest, &[], "pd").is_err());
        assert!(next_task(&rest, &[region(1, "a", "c", &[1])], "pd").is_err());
    }
}

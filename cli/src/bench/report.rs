//! Measuring and reporting: per-operation HDR histograms, the live progress line and the final
//! table (or JSON).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::format::json_str;

/// Largest latency a histogram holds, in microseconds (one minute); slower operations are
/// clamped to it rather than lost.
const MAX_LATENCY_US: u64 = 60_000_000;

/// The kinds of operation a workload mixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// A point get.
    Read,
    /// A point put of a new value.
    Update,
    /// A get followed by a put of the same key (timed as one operation).
    ReadModifyWrite,
}

impl OpKind {
    /// Every kind, in table order.
    pub(crate) const ALL: [OpKind; 3] = [OpKind::Read, OpKind::Update, OpKind::ReadModifyWrite];

    /// The kind's name in the table and in JSON.
    pub(crate) fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Update => "update",
            OpKind::ReadModifyWrite => "read-modify-write",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A latency histogram in microseconds, 3 significant digits.
fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low, 3 digits).
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// One worker's measurements (no sharing on the hot path; merged at the end).
#[derive(Debug)]
pub(crate) struct Recorder {
    latencies: Vec<Histogram<u64>>,
    errors: [u64; 3],
    first_error: Option<String>,
    /// Operations still running at the deadline, cancelled (neither successes nor errors).
    cut_off: u64,
}

impl Recorder {
    /// An empty recorder.
    pub(crate) fn new() -> Self {
        Recorder {
            latencies: OpKind::ALL.iter().map(|_| histogram()).collect(),
            errors: [0; 3],
            first_error: None,
            cut_off: 0,
        }
    }

    /// A successful operation of `kind` that took `elapsed`.
    pub(crate) fn ok(&mut self, kind: OpKind, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latencies[kind.index()].saturating_record(us.max(1));
    }

    /// A failed operation of `kind`.
    pub(crate) fn error(&mut self, kind: OpKind, message: String) {
        self.errors[kind.index()] += 1;
        self.first_error.get_or_insert(message);
    }

    /// An operation cancelled because the deadline passed while it ran.
    pub(crate) fn cut_off(&mut self) {
        self.cut_off += 1;
    }

    /// Operations cancelled at the deadline.
    pub(crate) fn cut_off_count(&self) -> u64 {
        self.cut_off
    }

    /// Adds `other`'s measurements to these.
    pub(crate) fn merge(&mut self, other: Recorder) {
        self.cut_off += other.cut_off;
        for (mine, theirs) in self.latencies.iter_mut().zip(&other.latencies) {
            // Same bounds on both sides, so adding cannot fail.
            let _ = mine.add(theirs);
        }
        for (mine, theirs) in self.errors.iter_mut().zip(other.errors) {
            *mine += theirs;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// Failed operations of every kind.
    pub(crate) fn total_errors(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// The first failure seen, if any.
    pub(crate) fn first_error(&self) -> Option<&str> {
        self.first_error.as_deref()
    }
}

/// One row of the final table.
#[derive(Debug)]
pub(crate) struct Row {
    /// Operation kind, or `total`.
    pub(crate) name: &'static str,
    /// Successful operations.
    pub(crate) count: u64,
    /// Failed operations.
    pub(crate) errors: u64,
    /// Successful operations per second of the run.
    pub(crate) ops_per_sec: f64,
    /// Latency percentiles and maximum, in microseconds.
    pub(crate) p50: u64,
    /// 99th percentile.
    pub(crate) p99: u64,
    /// 99.9th percentile.
    pub(crate) p999: u64,
    /// Slowest.
    pub(crate) max: u64,
}

impl Row {
    fn new(name: &'static str, h: &Histogram<u64>, errors: u64, elapsed: Duration) -> Row {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Row {
            name,
            count: h.len(),
            errors,
            ops_per_sec: h.len() as f64 / secs,
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// The rows of the final table: each kind that ran, then the total.
pub(crate) fn rows(recorder: &Recorder, elapsed: Duration) -> Vec<Row> {
    let mut total = histogram();
    let mut rows = Vec::new();
    for kind in OpKind::ALL {
        let h = &recorder.latencies[kind.index()];
        let errors = recorder.errors[kind.index()];
        if h.is_empty() && errors == 0 {
            continue;
        }
        let _ = total.add(h);
        rows.push(Row::new(kind.name(), h, errors, elapsed));
    }
    rows.push(Row::new("total", &total, recorder.total_errors(), elapsed));
    rows
}

/// A latency in microseconds as `850 µs`, `12.3 ms` or `1.20 s`.
pub(crate) fn latency(us: u64) -> String {
    crate::format::elapsed(Duration::from_micros(us))
}

/// The table as text lines (header first), columns aligned.
pub(crate) fn table(rows: &[Row]) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<18} {:>10} {:>11} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "operation", "count", "ops/s", "p50", "p99", "p99.9", "max", "errors"
    )];
    for r in rows {
        lines.push(format!(
            "{:<18} {:>10} {:>11.1} {:>10} {:>10} {:>10} {:>10} {:>7}",
            r.name,
            r.count,
            r.ops_per_sec,
            latency(r.p50),
            latency(r.p99),
            latency(r.p999),
            latency(r.max),
            r.errors
        ));
    }
    lines
}

/// The rows as a JSON array (latencies in microseconds).
pub(crate) fn json_rows(rows: &[Row]) -> String {
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{{\"operation\":{},\"count\":{},\"errors\":{},\"ops_per_sec\":{:.1},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{}}}",
                json_str(r.name),
                r.count,
                r.errors,
                r.ops_per_sec,
                r.p50,
                r.p99,
                r.p999,
                r.max
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// Counters the workers bump and the progress display reads.
#[derive(Debug, Default)]
pub(crate) struct Live {
    /// Operations finished (successfully or not).
    pub(crate) done: AtomicU64,
    /// Operations failed.
    pub(crate) failed: AtomicU64,
    /// Set when the run is over, to stop the display.
    pub(crate) finished: AtomicBool,
}

/// What the run is bounded by, for the progress percentage.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Limit {
    /// A number of operations.
    Ops(u64),
    /// A wall-clock duration.
    Time(Duration),
}

/// Shows progress on stderr until `live.finished`: on a terminal a bar and live throughput
/// rewritten in place several times a second; otherwise (a log, CI) a plain line per second,
/// since carriage returns turn a log into one unreadable line.
pub(crate) async fn progress(live: Arc<Live>, limit: Limit, start: Instant) {
    let tty = std::io::stderr().is_terminal();
    let tick = if tty {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(1)
    };
    let mut last = (start, 0u64);
    let mut shown = false;
    loop {
        tokio::time::sleep(tick).await;
        if live.finished.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        let done = live.done.load(Ordering::Relaxed);
        let failed = live.failed.load(Ordering::Relaxed);
        let elapsed = now - start;
        let fraction = match limit {
            Limit::Ops(n) => done as f64 / n.max(1) as f64,
            Limit::Time(d) => elapsed.as_secs_f64() / d.as_secs_f64(),
        }
        .clamp(0.0, 1.0);
        let recent = (done - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-9);
        let average = done as f64 / elapsed.as_secs_f64().max(1e-9);
        last = (now, done);
        let text = format!(
            "{} {:>3.0}%  {done} ops  {recent:.0} ops/s now, {average:.0} ops/s average  {failed} errors  {:.1} s",
            bar(fraction, 24),
            fraction * 100.0,
            elapsed.as_secs_f64()
        );
        let mut err = std::io::stderr().lock();
        // Progress is best effort: a closed stderr must not stop the benchmark.
        let _ = if tty {
            // Clear to the end of the line: the new text may be shorter than the old.
            write!(err, "\r{text}\x1b[K")
        } else {
            writeln!(err, "{text}")
        };
        let _ = err.flush();
        shown = true;
    }
    if tty && shown {
        let _ = write!(std::io::stderr(), "\r\x1b[K");
    }
}

/// A progress bar of `width` cells, `fraction` of them filled.
fn bar(fraction: f64, width: usize) -> String {
    let filled = ((fraction * width as f64).round() as usize).min(width);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_cover_the_kinds_that_ran_and_a_total() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        for us in 1..=1000 {
            a.ok(OpKind::Read, Duration::from_micros(us));
        }
        b.ok(OpKind::Update, Duration::from_millis(5));
        b.error(OpKind::Update, "boom".into());
        b.error(OpKind::Update, "later".into());
        a.merge(b);
        let rows = rows(&a, Duration::from_secs(1));
        let names: Vec<&str> = rows.iter().map(|r| r.name).collect();
        assert_eq!(names, ["read", "update", "total"]);
        assert_eq!(rows[0].count, 1000);
        assert!((495..=505).contains(&rows[0].p50), "{}", rows[0].p50);
        assert!((985..=995).contains(&rows[0].p99), "{}", rows[0].p99);
        assert_eq!(rows[2].count, 1001);
        assert_eq!(rows[2].errors, 2);
        assert_eq!(a.first_error(), Some("boom"));
        let json = json_rows(&rows);
        assert!(
            json.starts_with("[{\"operation\":\"read\",\"count\":1000,"),
            "{json}"
        );
        let table = table(&rows);
        assert_eq!(table.len(), 4);
        assert!(table[0].contains("p99.9"));
    }

    #[test]
    fn the_bar_fills_in_proportion() {
        assert_eq!(bar(0.0, 4), "[....]");
        assert_eq!(bar(0.5, 4), "[##..]");
        assert_eq!(bar(1.0, 4), "[####]");
    }
}

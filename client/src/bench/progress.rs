//! The progress line of `runnel bench …`: one line on standard error, redrawn in place four
//! times a second, cleared when the bench ends (also on an error, when the guard is dropped).
//! The `runnel` CLI asks for it only when standard error is a terminal.
//!
//! The bench publishes what it has done through a cheap counter (an atomic, or the count of
//! the producers' latency histogram) that a thread of its own reads: the hot path does not
//! know the line exists. What the line says is [`render`], a pure function of a [`Snapshot`].

use std::collections::VecDeque;
use std::io::Write;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the line is redrawn.
const TICK: Duration = Duration::from_millis(250);
/// The span of the current rate.
const WINDOW: Duration = Duration::from_secs(1);
/// Columns assumed when `COLUMNS` does not say: a line wider than the terminal wraps, and a
/// carriage return then redraws only its last row.
const DEFAULT_WIDTH: usize = 80;

/// Draws the line until dropped, then clears it; does nothing when not enabled.
#[derive(Debug)]
pub(crate) struct Progress {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts drawing `total` records' progress under `label` when `enabled`; `count` returns
    /// the records done so far and their value bytes.
    pub(crate) fn start(
        enabled: bool,
        label: &'static str,
        total: u64,
        count: impl Fn() -> (u64, u64) + Send + 'static,
    ) -> Self {
        let width = terminal_width(std::env::var("COLUMNS").ok().as_deref());
        Self::start_on(enabled, std::io::stderr, width, label, total, count)
    }

    /// [`start`](Self::start) drawing on what `out` returns, `width` columns wide.
    fn start_on<W: Write>(
        enabled: bool,
        out: impl Fn() -> W + Send + 'static,
        width: usize,
        label: &'static str,
        total: u64,
        count: impl Fn() -> (u64, u64) + Send + 'static,
    ) -> Self {
        if !enabled {
            return Progress {
                stop: None,
                thread: None,
            };
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-progress".into())
            .spawn(move || draw(&out, width, label, total, &count, &stopped))
            // No thread, no line: the bench itself does not need it.
            .ok();
        Progress {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // Disconnecting the channel wakes the thread at once; it clears the line and ends.
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The drawing thread: redraws every tick until the channel is closed.
fn draw<W: Write>(
    out: &dyn Fn() -> W,
    width: usize,
    label: &'static str,
    total: u64,
    count: &dyn Fn() -> (u64, u64),
    stopped: &mpsc::Receiver<()>,
) {
    let start = Instant::now();
    let mut window = RateWindow::default();
    window.push(Duration::ZERO, 0, 0);
    let mut drawn = false;
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
        let elapsed = start.elapsed();
        let (done, bytes) = count();
        let (records_per_sec, bytes_per_sec) = window.push(elapsed, done, bytes);
        let line = render(
            &Snapshot {
                label,
                done,
                total,
                records_per_sec,
                bytes_per_sec,
                elapsed,
            },
            width,
        );
        // One write per redraw; errors (a closed stderr) only cost the line.
        let mut out = out();
        let _ = out.write_all(format!("\r{line}\x1b[K").as_bytes());
        let _ = out.flush();
        drawn = true;
    }
    if drawn {
        let mut out = out();
        let _ = out.write_all(b"\r\x1b[K");
        let _ = out.flush();
    }
}

/// The terminal's width from `COLUMNS` (std cannot ask the terminal), else 80.
fn terminal_width(columns: Option<&str>) -> usize {
    columns
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|w| *w > 0)
        .unwrap_or(DEFAULT_WIDTH)
}

/// Rates over the last [`WINDOW`] of samples.
#[derive(Debug, Default)]
struct RateWindow {
    /// (time since start, records, bytes), oldest first.
    samples: VecDeque<(Duration, u64, u64)>,
}

impl RateWindow {
    /// Adds a sample; records/s and bytes/s since the newest sample at least a window old
    /// (or the oldest one, early on).
    fn push(&mut self, at: Duration, records: u64, bytes: u64) -> (f64, f64) {
        self.samples.push_back((at, records, bytes));
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|s| at.saturating_sub(s.0) >= WINDOW)
        {
            self.samples.pop_front();
        }
        let Some(&(t0, r0, b0)) = self.samples.front() else {
            return (0.0, 0.0);
        };
        let dt = at.saturating_sub(t0).as_secs_f64();
        if dt <= 0.0 {
            return (0.0, 0.0);
        }
        (
            records.saturating_sub(r0) as f64 / dt,
            bytes.saturating_sub(b0) as f64 / dt,
        )
    }
}

/// The figures of one redraw.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot<'a> {
    /// What is counted: `acked` (produce), `consume`, `group`.
    pub(crate) label: &'a str,
    /// Records done (clamped to `total` on the line).
    pub(crate) done: u64,
    /// Records to do.
    pub(crate) total: u64,
    /// Current rate.
    pub(crate) records_per_sec: f64,
    /// Current rate of value bytes.
    pub(crate) bytes_per_sec: f64,
    /// Since the bench's clock started.
    pub(crate) elapsed: Duration,
}

/// Bars tried, widest first, before the line goes without one.
const BARS: [usize; 2] = [20, 10];

/// The line for `s`, at most `width - 1` columns (the last column is left free: writing it
/// makes some terminals wrap). Optional parts go first when the width is short: the bar, then
/// the elapsed time; a line still too long is cut.
pub(crate) fn render(s: &Snapshot<'_>, width: usize) -> String {
    let budget = width.saturating_sub(1);
    let done = s.done.min(s.total);
    let percent = if s.total == 0 {
        100
    } else {
        (u128::from(done) * 100 / u128::from(s.total)) as u64
    };
    let total = thousands(s.total);
    let head = format!(
        "{} {:>w$}/{total} {percent:>3}%",
        s.label,
        thousands(done),
        w = total.len()
    );
    let rates = format!(
        " {} rec/s {} MB/s",
        rate(s.records_per_sec),
        megabytes(s.bytes_per_sec)
    );
    let left = format!("  {} left", eta(done, s.total, s.records_per_sec));
    let elapsed = format!("  {} elapsed", clock(s.elapsed));
    let line = |bar: Option<usize>, elapsed: &str| {
        let bar = bar.map_or_else(String::new, |n| {
            let filled = if s.total == 0 {
                n
            } else {
                (u128::from(done) * n as u128 / u128::from(s.total)) as usize
            };
            format!(" [{}{}]", "#".repeat(filled), ".".repeat(n - filled))
        });
        format!("{head}{bar}{rates}{elapsed}{left}")
    };
    let candidates = BARS
        .iter()
        .map(|n| line(Some(*n), &elapsed))
        .chain([line(None, &elapsed), line(None, "")]);
    let mut last = String::new();
    for c in candidates {
        if c.len() <= budget {
            return c;
        }
        last = c;
    }
    // ASCII only: a byte is a column.
    last.truncate(budget);
    last
}

/// `1234567` → `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Records/s in six columns: `   950`, `850.3k`, `  2.1M`.
fn rate(v: f64) -> String {
    let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
    let s = if v >= 999_950.0 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 999.5 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    };
    format!("{s:>6}")
}

/// 10^6 bytes/s in four columns, as the reports count MB.
fn megabytes(bytes_per_sec: f64) -> String {
    let v = if bytes_per_sec.is_finite() {
        bytes_per_sec.max(0.0) / 1e6
    } else {
        0.0
    };
    let s = if v < 9.95 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    };
    format!("{s:>4}")
}

/// `m:ss`, or `h:mm:ss` from an hour on.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// The time left at `rate`, rounded up; `--:--` while nothing moves (or beyond 100 hours).
fn eta(done: u64, total: u64, rate: f64) -> String {
    let remaining = total.saturating_sub(done);
    if remaining == 0 {
        return clock(Duration::ZERO);
    }
    if !(rate.is_finite() && rate > 0.0) {
        return "--:--".into();
    }
    let secs = (remaining as f64 / rate).ceil();
    if secs >= 360_000.0 {
        return "--:--".into();
    }
    clock(Duration::from_secs(secs as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(done: u64, total: u64, records_per_sec: f64, elapsed_secs: u64) -> Snapshot<'static> {
        Snapshot {
            label: "acked",
            done,
            total,
            records_per_sec,
            bytes_per_sec: records_per_sec * 100.0,
            elapsed: Duration::from_secs(elapsed_secs),
        }
    }

    #[test]
    fn the_line_says_counts_percent_rate_and_times() {
        let line = render(&snap(1_234_567, 3_000_000, 2.1e6, 1), 200);
        assert_eq!(
            line,
            "acked 1,234,567/3,000,000  41% [########............]   2.1M rec/s  210 MB/s  0:01 \
             elapsed  0:01 left"
        );
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(12_345_678_901), "12,345,678,901");
        assert_eq!(rate(950.4), "   950");
        assert_eq!(rate(850_321.0), "850.3k");
        assert_eq!(rate(999_999.0), "  1.0M");
        assert_eq!(rate(f64::NAN), "     0");
        assert_eq!(megabytes(2_150_000.0), " 2.1");
        assert_eq!(megabytes(1_234_000_000.0), "1234");
    }

    #[test]
    fn percent_rounds_down_to_100_only_when_done() {
        assert!(render(&snap(0, 3, 0.0, 0), 200).contains("   0%"));
        assert!(render(&snap(2_999_999, 3_000_000, 1.0, 0), 200).contains("  99%"));
        assert!(render(&snap(3_000_000, 3_000_000, 1.0, 0), 200).contains(" 100%"));
        // No overflow near u64::MAX.
        assert!(render(&snap(u64::MAX / 2, u64::MAX, 1.0, 0), 400).contains("  49%"));
    }

    #[test]
    fn eta_is_the_rest_at_the_current_rate() {
        assert_eq!(eta(0, 36_000, 10.0), "1:00:00");
        assert_eq!(eta(0, 1000, 3.0), "5:34", "333.3 s rounds up");
        assert_eq!(eta(10, 10, 0.0), "0:00", "done");
        assert_eq!(eta(0, 10, 0.0), "--:--", "nothing moves");
        assert_eq!(eta(0, u64::MAX, 1.0), "--:--", "beyond 100 hours");
        assert_eq!(clock(Duration::from_millis(59_999)), "0:59");
        assert_eq!(clock(Duration::from_secs(3_599)), "59:59");
        assert_eq!(clock(Duration::from_secs(3_600 * 25 + 61)), "25:01:01");
    }

    #[test]
    fn the_line_keeps_its_width_and_fits_the_terminal() {
        // The same width from the first record to the last, so redraws do not jitter.
        let widths: Vec<usize> = [0, 5, 123_456, 2_999_999, 3_000_000]
            .iter()
            .map(|d| render(&snap(*d, 3_000_000, 1.5e6, 1), 200).len())
            .collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{widths:?}");
        // Narrower terminals lose the bar, then the elapsed time, then the end of the line.
        let full = render(&snap(1_234_567, 3_000_000, 2.1e6, 1), 200);
        let at_80 = render(&snap(1_234_567, 3_000_000, 2.1e6, 1), 80);
        assert!(at_80.len() < 80, "{at_80}");
        assert!(!at_80.contains('['), "{at_80}");
        assert!(
            at_80.contains("elapsed") && at_80.ends_with("0:01 left"),
            "{at_80}"
        );
        let at_70 = render(&snap(1_234_567, 3_000_000, 2.1e6, 1), 70);
        assert!(
            !at_70.contains("elapsed") && at_70.ends_with("left"),
            "{at_70}"
        );
        let at_30 = render(&snap(1_234_567, 3_000_000, 2.1e6, 1), 30);
        assert_eq!(at_30.len(), 29);
        assert!(full.starts_with(&at_30));
        assert_eq!(render(&snap(1, 2, 1.0, 0), 0), "");
        assert_eq!(terminal_width(Some("132")), 132);
        assert_eq!(terminal_width(Some("0")), 80);
        assert_eq!(terminal_width(Some("wide")), 80);
        assert_eq!(terminal_width(None), 80);
    }

    #[test]
    fn zero_total_is_complete() {
        let line = render(&snap(0, 0, 0.0, 0), 200);
        assert!(
            line.starts_with("acked 0/0 100% [####################]"),
            "{line}"
        );
        assert!(line.ends_with("0:00 left"), "{line}");
    }

    #[test]
    fn done_beyond_total_is_clamped() {
        // A group's last poll may hand out more than the records asked for.
        let line = render(&snap(12, 10, 5.0, 0), 200);
        assert!(
            line.starts_with("acked 10/10 100% [####################]"),
            "{line}"
        );
        assert!(line.ends_with("0:00 left"), "{line}");
    }

    /// A writer into a shared buffer.
    #[derive(Debug, Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_line_is_redrawn_until_dropped_then_cleared() {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        let screen = Shared::default();
        let calls = Arc::new(AtomicU64::new(0));
        let progress = {
            let (screen, calls) = (screen.clone(), calls.clone());
            Progress::start_on(
                true,
                move || screen.clone(),
                80,
                "acked",
                10,
                move || {
                    let n = calls.fetch_add(1, Ordering::Relaxed) + 1;
                    (n, n * 100)
                },
            )
        };
        std::thread::sleep(TICK * 3);
        drop(progress);
        let drawn = calls.load(Ordering::Relaxed);
        assert!(drawn >= 1, "drew {drawn} times");
        let text =
            String::from_utf8(screen.0.lock().expect("not poisoned").clone()).expect("ascii");
        assert!(text.starts_with("\racked  1/10  10% "), "{text:?}");
        assert!(text.ends_with(" left\x1b[K\r\x1b[K"), "{text:?}");
        assert_eq!(text.matches('\r').count() as u64, drawn + 1, "{text:?}");
        // The thread has ended: nothing is counted or drawn any more.
        std::thread::sleep(TICK * 2);
        assert_eq!(calls.load(Ordering::Relaxed), drawn);

        // Not enabled: no thread, no output.
        let screen = Shared::default();
        let quiet = {
            let screen = screen.clone();
            Progress::start_on(false, move || screen.clone(), 80, "acked", 10, || (1, 1))
        };
        assert!(quiet.thread.is_none());
        drop(quiet);
        assert!(screen.0.lock().expect("not poisoned").is_empty());
    }

    #[test]
    fn the_rate_spans_about_the_last_second() {
        let mut w = RateWindow::default();
        let ms = Duration::from_millis;
        assert_eq!(w.push(ms(0), 0, 0), (0.0, 0.0));
        // 1000 records/s for a second and a half, then 4000 records/s.
        let (r, b) = w.push(ms(250), 250, 25_000);
        assert!((r - 1000.0).abs() < 1e-6 && (b - 100_000.0).abs() < 1e-6);
        for i in 2..=6 {
            w.push(ms(250 * i), 250 * i, 0);
        }
        let mut last = 0.0;
        for i in 1..=4 {
            last = w.push(ms(1500 + 250 * i), 1500 + 1000 * i, 0).0;
        }
        assert!((last - 4000.0).abs() < 1e-6, "{last}");
        // A second of nothing brings it to zero.
        for i in 1..=4 {
            last = w.push(ms(2500 + 250 * i), 5500, 0).0;
        }
        assert_eq!(last, 0.0);
    }
}

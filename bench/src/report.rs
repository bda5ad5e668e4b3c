//! Measurements and how they are shown: an HDR histogram of latencies plus
//! errors by gRPC code while a workload runs ([`Recorder`]), and the
//! [`Summary`] printed at the end, as text for people or JSON for machines.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, from 1 µs to one hour, to three
/// significant digits (0.1 % error at any magnitude).
const MAX_MICROS: u64 = 3_600_000_000;

/// Latencies and errors collected by one client (or merged from many).
#[derive(Clone, Debug)]
pub struct Recorder {
    hist: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    samples: BTreeMap<String, String>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            hist: Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds"),
            errors: BTreeMap::new(),
            samples: BTreeMap::new(),
        }
    }
}

impl Recorder {
    /// Records the latency of one successful operation.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.hist.saturating_record(micros.clamp(1, MAX_MICROS));
    }

    /// Counts one failed operation under `code`; the first message seen for
    /// each code is kept as a sample for the report.
    pub fn error(&mut self, code: &str, message: &str) {
        *self.errors.entry(code.to_string()).or_default() += 1;
        self.samples
            .entry(code.to_string())
            .or_insert_with(|| truncate(message, 200));
    }

    /// Counts a failed gRPC call.
    pub fn status(&mut self, status: &tonic::Status) {
        self.error(&format!("{:?}", status.code()), status.message());
    }

    /// Adds everything `other` recorded.
    pub fn merge(&mut self, other: &Recorder) {
        self.hist
            .add(&other.hist)
            .expect("histograms share their bounds");
        self.merge_errors(other);
    }

    /// Adds only the errors `other` recorded.
    pub fn merge_errors(&mut self, other: &Recorder) {
        for (code, n) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
        for (code, msg) in &other.samples {
            self.samples
                .entry(code.clone())
                .or_insert_with(|| msg.clone());
        }
    }

    /// Successful operations recorded.
    pub fn ops(&self) -> u64 {
        self.hist.len()
    }

    /// Failed operations recorded.
    pub fn errors(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The figures of a run that took `elapsed`.
    pub fn summary(&self, workload: &str, elapsed: Duration) -> Summary {
        let secs = elapsed.as_secs_f64();
        let ops = self.ops();
        Summary {
            workload: workload.to_string(),
            ops,
            errors: self.errors(),
            elapsed_secs: secs,
            ops_per_sec: if secs > 0.0 { ops as f64 / secs } else { 0.0 },
            latency_ms: self.latency(),
            errors_by_code: self.errors.clone(),
            error_samples: self.samples.clone(),
            counters: BTreeMap::new(),
        }
    }

    fn latency(&self) -> Latency {
        if self.hist.is_empty() {
            return Latency::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        let q = |quantile: f64| ms(self.hist.value_at_quantile(quantile));
        Latency {
            min: ms(self.hist.min()),
            avg: self.hist.mean() / 1000.0,
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p99_9: q(0.999),
            max: ms(self.hist.max()),
        }
    }
}

/// Latency figures in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    pub min: f64,
    pub avg: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    #[serde(rename = "p99.9")]
    pub p99_9: f64,
    pub max: f64,
}

/// The result of one workload run.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub workload: String,
    /// Successful operations.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    pub elapsed_secs: f64,
    /// Successful operations per second.
    pub ops_per_sec: f64,
    pub latency_ms: Latency,
    pub errors_by_code: BTreeMap<String, u64>,
    /// The first error message seen for each code.
    pub error_samples: BTreeMap<String, String>,
    /// Workload-specific counts (conflicts, reads/writes, missing events, ...).
    pub counters: BTreeMap<String, u64>,
}

impl Summary {
    /// The summary as etcd's benchmark tool would print it, in a few lines.
    pub fn to_text(&self) -> String {
        let l = &self.latency_ms;
        let mut out = format!(
            "{}: {} ops in {:.2} s, {:.1} ops/s, {} errors\n\
             latency (ms): min {:.3}  avg {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}\n",
            self.workload,
            self.ops,
            self.elapsed_secs,
            self.ops_per_sec,
            self.errors,
            l.min,
            l.avg,
            l.p50,
            l.p90,
            l.p99,
            l.p99_9,
            l.max
        );
        for (code, n) in &self.errors_by_code {
            let sample = self.error_samples.get(code).map_or("", String::as_str);
            out.push_str(&format!("error {code}: {n} (first: {sample:?})\n"));
        }
        if !self.counters.is_empty() {
            let counts: Vec<String> = self
                .counters
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            out.push_str(&format!("counters: {}\n", counts.join(", ")));
        }
        out
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b.abs() * 0.002
    }

    fn one_to_thousand_ms() -> Recorder {
        let mut r = Recorder::default();
        for ms in 1..=1000 {
            r.record(Duration::from_millis(ms));
        }
        r
    }

    #[test]
    fn percentiles_of_a_uniform_sample_are_its_ranks() {
        let l = one_to_thousand_ms()
            .summary("t", Duration::from_secs(1))
            .latency_ms;
        assert!(close(l.min, 1.0), "{l:?}");
        assert!(close(l.p50, 500.0), "{l:?}");
        assert!(close(l.p90, 900.0), "{l:?}");
        assert!(close(l.p99, 990.0), "{l:?}");
        assert!(close(l.p99_9, 999.0), "{l:?}");
        assert!(close(l.max, 1000.0), "{l:?}");
        assert!(close(l.avg, 500.5), "{l:?}");
    }

    #[test]
    fn throughput_counts_only_successes_over_elapsed_time() {
        let mut r = one_to_thousand_ms();
        r.error("Unavailable", "gone");
        let s = r.summary("t", Duration::from_secs(4));
        assert_eq!((s.ops, s.errors), (1000, 1));
        assert!(close(s.ops_per_sec, 250.0));
    }

    #[test]
    fn merge_adds_counts_and_keeps_the_first_error_sample() {
        let mut a = Recorder::default();
        a.record(Duration::from_micros(10));
        a.error("Unavailable", "first");
        let mut b = Recorder::default();
        b.record(Duration::from_micros(30));
        b.error("Unavailable", "second");
        b.error("ResourceExhausted", "too many");
        a.merge(&b);
        let s = a.summary("t", Duration::from_secs(1));
        assert_eq!(s.ops, 2);
        assert_eq!(s.errors_by_code["Unavailable"], 2);
        assert_eq!(s.errors_by_code["ResourceExhausted"], 1);
        assert_eq!(s.error_samples["Unavailable"], "first");
    }

    #[test]
    fn an_empty_run_reports_zeros_not_nan() {
        let s = Recorder::default().summary("t", Duration::ZERO);
        assert_eq!(s.ops_per_sec, 0.0);
        assert_eq!(s.latency_ms, Latency::default());
        assert!(serde_json::to_string(&s).is_ok());
    }

    #[test]
    fn sub_microsecond_and_huge_latencies_are_clamped_into_range() {
        let mut r = Recorder::default();
        r.record(Duration::from_nanos(10));
        r.record(Duration::from_secs(10_000));
        let l = r.summary("t", Duration::from_secs(1)).latency_ms;
        assert!(close(l.min, 0.001));
        assert!(close(l.max, MAX_MICROS as f64 / 1000.0));
    }

    #[test]
    fn text_lists_errors_by_code_with_a_sample() {
        let mut r = Recorder::default();
        r.error("Unavailable", "connection refused");
        let text = r.summary("put", Duration::from_secs(1)).to_text();
        assert!(text.contains("error Unavailable: 1 (first: \"connection refused\")"));
    }
}

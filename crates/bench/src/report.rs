//! Latency recording (HDR histograms in microseconds, one per client, merged at
//! the end) and the summary: etcd-benchmark-like text, or JSON for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// The slowest latency a histogram holds exactly; slower ones count as this.
const MAX_LATENCY_MICROS: u64 = 3_600_000_000;

/// What one client saw for one kind of request.
#[derive(Clone)]
pub struct Recorder {
    latency_micros: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Recorder")
            .field("n_ok", &self.n_ok())
            .field("errors", &self.errors)
            .finish()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            // Three significant figures from 1µs to an hour: a few tens of KiB.
            latency_micros: Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3)
                .expect("constant histogram bounds are valid"),
            errors: BTreeMap::new(),
        }
    }

    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_micros.saturating_record(micros.max(1));
    }

    pub fn record_error(&mut self, error: impl Into<String>) {
        *self.errors.entry(error.into()).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Recorder) {
        self.latency_micros
            .add(&other.latency_micros)
            .expect("histograms share their bounds");
        for (error, count) in &other.errors {
            *self.errors.entry(error.clone()).or_default() += count;
        }
    }

    pub fn n_ok(&self) -> u64 {
        self.latency_micros.len()
    }

    pub fn n_errors(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// One measured phase of a workload (a workload may have several: watch
/// creation and event delivery, reads and writes).
pub struct Section {
    pub name: String,
    pub recorder: Recorder,
    pub duration: Duration,
}

impl Section {
    pub fn new(name: &str, recorder: Recorder, duration: Duration) -> Self {
        Self {
            name: name.to_string(),
            recorder,
            duration,
        }
    }

    fn requests_per_second(&self) -> f64 {
        let seconds = self.duration.as_secs_f64();
        if seconds > 0.0 {
            self.recorder.n_ok() as f64 / seconds
        } else {
            0.0
        }
    }

    fn latency_ms(&self, quantile: f64) -> f64 {
        self.recorder.latency_micros.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn to_json(&self) -> Value {
        let histogram = &self.recorder.latency_micros;
        let ms = |micros: f64| micros / 1000.0;
        json!({
            "name": self.name,
            "requests": self.recorder.n_ok(),
            "errors": self.recorder.n_errors(),
            "error_counts": self.recorder.errors,
            "duration_seconds": self.duration.as_secs_f64(),
            "requests_per_second": self.requests_per_second(),
            "latency_ms": {
                "min": ms(histogram.min() as f64),
                "mean": ms(histogram.mean()),
                "stddev": ms(histogram.stdev()),
                "p50": self.latency_ms(0.50),
                "p90": self.latency_ms(0.90),
                "p95": self.latency_ms(0.95),
                "p99": self.latency_ms(0.99),
                "p999": self.latency_ms(0.999),
                "max": ms(histogram.max() as f64),
            },
        })
    }

    fn write_text(&self, out: &mut String) {
        let histogram = &self.recorder.latency_micros;
        let seconds = |micros: f64| micros / 1_000_000.0;
        let _ = writeln!(out, "Summary ({}):", self.name);
        let _ = writeln!(out, "  Total:\t{:.4} secs.", self.duration.as_secs_f64());
        let _ = writeln!(
            out,
            "  Requests:\t{} ({} errors)",
            self.recorder.n_ok(),
            self.recorder.n_errors()
        );
        if !histogram.is_empty() {
            let _ = writeln!(
                out,
                "  Slowest:\t{:.4} secs.",
                seconds(histogram.max() as f64)
            );
            let _ = writeln!(
                out,
                "  Fastest:\t{:.4} secs.",
                seconds(histogram.min() as f64)
            );
            let _ = writeln!(out, "  Average:\t{:.4} secs.", seconds(histogram.mean()));
            let _ = writeln!(out, "  Stddev:\t{:.4} secs.", seconds(histogram.stdev()));
        }
        let _ = writeln!(out, "  Requests/sec:\t{:.4}", self.requests_per_second());
        if !histogram.is_empty() {
            let _ = writeln!(out, "\nLatency distribution:");
            for (label, quantile) in [
                ("10%", 0.10),
                ("25%", 0.25),
                ("50%", 0.50),
                ("75%", 0.75),
                ("90%", 0.90),
                ("95%", 0.95),
                ("99%", 0.99),
                ("99.9%", 0.999),
            ] {
                let micros = histogram.value_at_quantile(quantile) as f64;
                let _ = writeln!(out, "  {label} in {:.4} secs.", seconds(micros));
            }
        }
        if !self.recorder.errors.is_empty() {
            let _ = writeln!(out, "\nError distribution:");
            for (error, count) in &self.recorder.errors {
                let _ = writeln!(out, "  [{count}]\t{error}");
            }
        }
    }
}

/// Everything a workload measured.
pub struct Summary {
    pub workload: String,
    pub sections: Vec<Section>,
    /// Other facts worth reporting (keys returned by a range, watchers made…).
    pub details: BTreeMap<String, Value>,
}

impl Summary {
    pub fn new(workload: &str) -> Self {
        Self {
            workload: workload.to_string(),
            sections: Vec::new(),
            details: BTreeMap::new(),
        }
    }

    pub fn section(mut self, section: Section) -> Self {
        self.sections.push(section);
        self
    }

    pub fn detail(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.details.insert(name.to_string(), value.into());
        self
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (section_idx, section) in self.sections.iter().enumerate() {
            if section_idx > 0 {
                out.push('\n');
            }
            section.write_text(&mut out);
        }
        if !self.details.is_empty() {
            out.push('\n');
            for (name, value) in &self.details {
                let _ = writeln!(out, "  {name}: {value}");
            }
        }
        out
    }

    pub fn to_json(&self) -> String {
        json!({
            "workload": self.workload,
            "sections": self.sections.iter().map(Section::to_json).collect::<Vec<_>>(),
            "details": self.details,
        })
        .to_string()
    }

    /// Fails when some section had no successful request at all: the numbers
    /// would be meaningless, and a script should not mistake them for a result.
    pub fn check_failures(&self) -> anyhow::Result<()> {
        for section in &self.sections {
            let recorder = &section.recorder;
            if recorder.n_ok() == 0 && recorder.n_errors() > 0 {
                let (most_common, _) = recorder
                    .errors
                    .iter()
                    .max_by_key(|(_, count)| **count)
                    .expect("n_errors > 0");
                anyhow::bail!("{}: every request failed: {most_common}", section.name);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reports_percentiles_and_errors() {
        let mut recorder = Recorder::new();
        for millis in 1..=100 {
            recorder.record(Duration::from_millis(millis));
        }
        let mut other = Recorder::new();
        other.record_error("boom");
        let mut merged = recorder.clone();
        merged.merge(&other);
        let summary =
            Summary::new("put").section(Section::new("put", merged, Duration::from_secs(2)));
        let json: Value = serde_json::from_str(&summary.to_json()).unwrap();
        let section = &json["sections"][0];
        assert_eq!(section["requests"], 100);
        assert_eq!(section["errors"], 1);
        assert_eq!(section["requests_per_second"], 50.0);
        let p50 = section["latency_ms"]["p50"].as_f64().unwrap();
        assert!((49.9..=50.1).contains(&p50), "p50 {p50}");
        assert!(summary.to_text().contains("[1]\tboom"));
        assert!(summary.check_failures().is_ok());
    }

    #[test]
    fn a_section_without_successes_fails_the_run() {
        let mut recorder = Recorder::new();
        recorder.record_error("not implemented");
        let summary =
            Summary::new("watch").section(Section::new("watch", recorder, Duration::from_secs(1)));
        let error = summary.check_failures().unwrap_err().to_string();
        assert!(error.contains("not implemented"), "{error}");
    }
}

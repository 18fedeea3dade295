//! The standard `process_*` metrics (the Go client's process collector's
//! names), read from `/proc/self` at each scrape.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Linux reports CPU times in clock ticks of `USER_HZ`, 100 on every
/// architecture Linux supports (the Go client's procfs assumes the same).
const USER_HZ: f64 = 100.0;

/// Encodes `process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_virtual_memory_bytes`, `process_virtual_memory_max_bytes`,
/// `process_open_fds`, `process_max_fds` and `process_start_time_seconds`.
/// A value that cannot be read is left out rather than failing the scrape.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// One reading of `/proc/self`.
#[derive(Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_memory_bytes: Option<i64>,
    pub virtual_memory_bytes: Option<i64>,
    pub start_time_seconds: Option<f64>,
    pub open_fds: Option<i64>,
    pub max_fds: Option<i64>,
}

impl ProcessStats {
    /// Reads this process's figures.
    pub fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let boot_time_seconds = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| boot_time_seconds(&text));
        let mut stats = stat
            .as_deref()
            .map(|stat| parse_stat(stat, boot_time_seconds))
            .unwrap_or_default();
        stats.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as i64);
        stats.max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|text| max_open_files(&text));
        stats
    }
}

/// Parses `/proc/self/stat`. The command name is in parentheses and may
/// hold spaces, so fields are counted from the last `)`.
fn parse_stat(stat: &str, boot_time_seconds: Option<f64>) -> ProcessStats {
    let Some(after_name) = stat.rfind(')').map(|idx| &stat[idx + 1..]) else {
        return ProcessStats::default();
    };
    // Field 3 (state) is the first after the name; proc(5) numbers from 1.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |number: usize| fields.get(number - 3).and_then(|f| f.parse::<u64>().ok());
    let page_size_bytes = 4096;
    ProcessStats {
        cpu_seconds: field(14)
            .zip(field(15))
            .map(|(user, system)| (user + system) as f64 / USER_HZ),
        resident_memory_bytes: field(24).map(|pages| (pages * page_size_bytes) as i64),
        virtual_memory_bytes: field(23).map(|bytes| bytes as i64),
        start_time_seconds: field(22)
            .zip(boot_time_seconds)
            .map(|(ticks, boot)| boot + ticks as f64 / USER_HZ),
        open_fds: None,
        max_fds: None,
    }
}

fn boot_time_seconds(proc_stat: &str) -> Option<f64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}

fn max_open_files(limits: &str) -> Option<i64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    match soft {
        "unlimited" => Some(i64::MAX),
        number => number.parse().ok(),
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = ProcessStats::read();
        if let Some(seconds) = stats.cpu_seconds {
            let counter = ConstCounter::new(seconds);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                counter.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                stats.resident_memory_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                stats.virtual_memory_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_max_bytes",
                "Maximum amount of virtual memory available in bytes.",
                Some(-1.0),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                stats.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                stats.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                stats.max_fds.map(|v| v as f64),
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    gauge.metric_type(),
                )?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_spaces_in_the_name_parses() {
        let stat = "4242 (shoal (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1000 123456789 300 18446744073709551615";
        let stats = parse_stat(stat, Some(1_700_000_000.0));
        assert_eq!(stats.cpu_seconds, Some(3.0));
        assert_eq!(stats.virtual_memory_bytes, Some(123_456_789));
        assert_eq!(stats.resident_memory_bytes, Some(300 * 4096));
        assert_eq!(stats.start_time_seconds, Some(1_700_000_010.0));
    }

    #[test]
    fn this_process_reads() {
        let stats = ProcessStats::read();
        assert!(stats.open_fds.unwrap() > 0);
        assert!(stats.resident_memory_bytes.unwrap() > 0);
        assert!(stats.max_fds.unwrap() > 0);
        assert!(stats.start_time_seconds.unwrap() > 1.0e9);
    }

    #[test]
    fn limits_parse() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
    }
}

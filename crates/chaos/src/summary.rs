//! The run's summary: operations by kind and outcome, the faults injected with
//! their times, what else happened to the members, each checker's verdict, and
//! where the history is.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::check::CheckResult;
use crate::faults::{FaultRecord, Observation};
use crate::history::{History, Operation, Outcome};

pub struct Summary<'a> {
    pub seed: Option<u64>,
    pub duration: Option<Duration>,
    pub history: &'a History,
    pub faults: &'a [FaultRecord],
    pub observations: &'a [Observation],
    pub results: &'a [CheckResult],
    pub history_path: &'a Path,
    pub dir: Option<&'a Path>,
}

fn kind_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Put { .. } => "put",
        Operation::Get { .. } => "get",
        Operation::Cas { .. } => "cas txn",
        Operation::LockAcquire { .. } => "lock",
        Operation::FencedWrite { .. } => "fenced write",
        Operation::LockRelease { .. } => "unlock",
        Operation::LeaseGrant { .. } => "lease grant",
        Operation::LeaseKeepAlive { .. } => "lease keep-alive",
        Operation::LeaseRevoke { .. } => "lease revoke",
        Operation::LeasePut { .. } => "leased put",
        Operation::WatchStart { .. } => "watch (re)start",
        Operation::WatchEvents { .. } => "watch response",
    }
}

pub fn render(summary: &Summary<'_>) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "== shoal chaos summary ==");
    if let Some(seed) = summary.seed {
        let _ = write!(text, "seed {seed}");
        if let Some(duration) = summary.duration {
            let _ = write!(text, ", duration {}s", duration.as_secs());
        }
        let _ = writeln!(text);
    }

    let mut counts: BTreeMap<&str, [usize; 3]> = BTreeMap::new();
    for record in &summary.history.records {
        let slot = match record.outcome {
            Outcome::Ok => 0,
            Outcome::Fail => 1,
            Outcome::Unknown => 2,
        };
        counts.entry(kind_name(&record.operation)).or_default()[slot] += 1;
    }
    let _ = writeln!(
        text,
        "\noperations ({} recorded):",
        summary.history.records.len()
    );
    let _ = writeln!(
        text,
        "  {:<18} {:>8} {:>8} {:>8}",
        "kind", "ok", "fail", "unknown"
    );
    for (kind, [ok, fail, unknown]) in &counts {
        let _ = writeln!(text, "  {kind:<18} {ok:>8} {fail:>8} {unknown:>8}");
    }

    if summary.seed.is_some() {
        let _ = writeln!(text, "\nfaults ({} injected):", summary.faults.len());
        let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
        for fault in summary.faults {
            *by_kind
                .entry(format!("{:?}", fault.kind).to_lowercase())
                .or_default() += 1;
            let _ = writeln!(
                text,
                "  {:>7.1}s – {:>7.1}s  {:<10} {}  {}",
                fault.injected_at_seconds,
                fault.healed_at_seconds,
                format!("{:?}", fault.kind).to_lowercase(),
                fault.member,
                fault.note
            );
        }
        let _ = writeln!(
            text,
            "  by kind: {}",
            by_kind
                .iter()
                .map(|(kind, count)| format!("{kind} {count}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !summary.observations.is_empty() {
            let _ = writeln!(text, "\nobservations:");
            for observation in summary.observations {
                let _ = writeln!(
                    text,
                    "  {:>7.1}s  {}",
                    observation.at_seconds, observation.text
                );
            }
        }
    }

    let _ = writeln!(text, "\ncheckers:");
    for result in summary.results {
        let _ = writeln!(text, "  {result}");
    }
    let n_violated = summary
        .results
        .iter()
        .filter(|result| result.is_violation())
        .count();
    let _ = writeln!(text, "\nhistory: {}", summary.history_path.display());
    if let Some(dir) = summary.dir {
        let _ = writeln!(text, "member logs: {}/m*/member.log", dir.display());
    }
    let _ = write!(
        text,
        "verdict: {}",
        if n_violated == 0 {
            "no violations".to_string()
        } else {
            format!(
                "{n_violated} propert{} VIOLATED",
                if n_violated == 1 { "y" } else { "ies" }
            )
        }
    );
    text
}

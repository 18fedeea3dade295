//! `shoal sim`: runs seeds of the store's deterministic simulation
//! (`store::sim`) and reports the ones that break an invariant, each with the
//! command that reproduces it.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use store::sim::{self, SimOptions, SimReport};

#[derive(Args)]
pub struct SimArgs {
    /// Run only this seed and print its whole report.
    #[arg(long, conflicts_with_all = ["seeds", "first_seed"])]
    seed: Option<u64>,
    /// How many seeds to run, from --first-seed on.
    #[arg(long, default_value_t = 200)]
    seeds: u64,
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Members of each simulated cluster.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    members: u64,
    /// Simulated time with faults per seed (a quiet period follows).
    #[arg(long, default_value = "20s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// Concurrent clients writing and reading.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    clients: u64,
    /// Put a known bug back on purpose, to watch the checkers catch it.
    #[arg(long, value_enum)]
    bug: Vec<Bug>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Bug {
    /// Acknowledge writes without fsyncing them.
    SkipFsync,
    /// Answer linearizable reads from local state without a read index.
    ReadWithoutQuorum,
    /// The lease bug the chaos run found: a deposed leader's stale expiry
    /// decision takes effect (see TESTING.md).
    StaleLeaseRevoke,
}

/// Exit status: 0 when every seed holds every invariant, 1 when one does not,
/// 2 when the simulation itself failed.
pub fn run(args: SimArgs) -> ExitCode {
    let mut bugs = store::InjectedBugs::default();
    for bug in &args.bug {
        match bug {
            Bug::SkipFsync => bugs.skip_fsync = true,
            Bug::ReadWithoutQuorum => bugs.read_without_quorum = true,
            Bug::StaleLeaseRevoke => bugs.stale_lease_revoke = true,
        }
    }
    let options = |seed| SimOptions {
        seed,
        members: args.members as usize,
        duration: args.duration,
        clients: args.clients as usize,
        bugs,
    };
    let reproduce = |seed: u64| {
        let mut command = format!("shoal sim --seed {seed}");
        if args.members != 3 {
            command.push_str(&format!(" --members {}", args.members));
        }
        if args.duration != Duration::from_secs(20) {
            command.push_str(&format!(" --duration {}s", args.duration.as_secs()));
        }
        if args.clients != 4 {
            command.push_str(&format!(" --clients {}", args.clients));
        }
        for bug in &args.bug {
            let name = bug.to_possible_value().expect("no skipped variants");
            command.push_str(&format!(" --bug {}", name.get_name()));
        }
        command
    };

    if let Some(seed) = args.seed {
        return match sim::run(&options(seed)) {
            Ok(report) => {
                print_report(&report);
                if report.violations.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    println!("reproduce: {}", reproduce(seed));
                    ExitCode::from(1)
                }
            }
            Err(error) => {
                eprintln!("error: seed {seed}: {error}");
                ExitCode::from(2)
            }
        };
    }

    let started = Instant::now();
    let progress = indicatif::ProgressBar::new(args.seeds);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} seeds, {msg} [{elapsed}]")
            .expect("a valid template"),
    );
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut failed = Vec::new();
    let mut totals = sim::SimStats::default();
    for seed in args.first_seed..args.first_seed.saturating_add(args.seeds) {
        let report = match sim::run(&options(seed)) {
            Ok(report) => report,
            Err(error) => {
                progress.abandon();
                eprintln!("error: seed {seed}: {error}");
                return ExitCode::from(2);
            }
        };
        totals.add(&report.stats);
        if !report.violations.is_empty() {
            progress.suspend(|| {
                println!("seed {seed} FAILED:\n{}", indent(&report.summary()));
                println!("  reproduce: {}", reproduce(seed));
            });
            failed.push(seed);
        }
        progress.set_message(format!("{} failed", failed.len()));
        progress.inc(1);
    }
    progress.finish_and_clear();
    println!(
        "{} seeds ({}..={}), {} member(s), {:?} of faults each: {} failed, in {:.1?}",
        args.seeds,
        args.first_seed,
        args.first_seed + args.seeds.saturating_sub(1),
        args.members,
        args.duration,
        failed.len(),
        started.elapsed()
    );
    println!(
        "  {} writes acknowledged, {} linearizable reads, {} crashes, {} pauses, {} partitions, {} members added and {} removed, {} leaders elected, {} snapshots sent, {} keep-alives, {} leases expired, {:.0?} simulated",
        totals.writes_acked,
        totals.reads_ok,
        totals.crashes,
        totals.pauses,
        totals.partitions,
        totals.members_added,
        totals.members_removed,
        totals.leaders,
        totals.snapshots_delivered,
        totals.keep_alives,
        totals.leases_expired,
        totals.simulated
    );
    if failed.is_empty() {
        println!("  every seed held: {}", sim::PROPERTIES.join(", "));
        ExitCode::SUCCESS
    } else {
        println!("  failed seeds: {failed:?}");
        ExitCode::from(1)
    }
}

fn print_report(report: &SimReport) {
    let stats = &report.stats;
    println!(
        "seed {}: {:.1?} simulated; writes {} acknowledged, {} failed, {} unknown; reads {} ok, {} failed",
        report.seed,
        stats.simulated,
        stats.writes_acked,
        stats.writes_failed,
        stats.writes_unknown,
        stats.reads_ok,
        stats.reads_failed
    );
    println!(
        "  {} crashes, {} pauses, {} partitions, {} members added and {} removed, {} leaders elected, {} messages delivered, {} dropped, {} snapshots sent",
        stats.crashes,
        stats.pauses,
        stats.partitions,
        stats.members_added,
        stats.members_removed,
        stats.leaders,
        stats.messages_delivered,
        stats.messages_dropped,
        stats.snapshots_delivered
    );
    println!("  trace digest {:016x}", report.trace_digest);
    for property in sim::PROPERTIES {
        let verdict = if report.violated(property) {
            "FAIL"
        } else {
            "PASS"
        };
        println!("  {verdict}  {property}");
    }
    if !report.violations.is_empty() {
        println!("{}", indent(&report.summary()));
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("  {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

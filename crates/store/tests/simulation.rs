//! The deterministic simulation (`store::sim`): a fixed set of seeds must
//! hold every invariant; one seed must repeat exactly; and bugs put back on
//! purpose must be caught, which shows the checkers can fail. More seeds:
//! `shoal sim --seeds 500` (see TESTING.md).

use std::time::{Duration, Instant};

use store::sim::{self, SimOptions};

/// Seeds of the default test command: three members for most, five for the
/// last ones. Each simulates 20 s of faults, then a quiet period.
const FIXED_SEEDS: std::ops::RangeInclusive<u64> = 1..=60;
const FIVE_MEMBERS_FROM: u64 = 51;

fn run(options: &SimOptions) -> sim::SimReport {
    let started = Instant::now();
    let report = sim::run(options).unwrap_or_else(|error| {
        panic!(
            "seed {}: the simulation could not run: {error}",
            options.seed
        )
    });
    println!(
        "seed {}: {:?} real for {:?} simulated; {:?}; {} violation(s)",
        options.seed,
        started.elapsed(),
        report.stats.simulated,
        report.stats,
        report.violations.len()
    );
    report
}

#[test]
fn fixed_seeds_hold_every_invariant() {
    let mut totals = sim::SimStats::default();
    for seed in FIXED_SEEDS {
        let options = SimOptions {
            members: if seed >= FIVE_MEMBERS_FROM { 5 } else { 3 },
            ..SimOptions::new(seed)
        };
        let report = run(&options);
        assert!(
            report.violations.is_empty(),
            "seed {seed} broke an invariant (reproduce: shoal sim --seed {seed} --members {}):\n{}",
            options.members,
            report.summary()
        );
        let stats = &report.stats;
        // Each run did something worth checking.
        assert!(
            stats.writes_acked > 100 && stats.reads_ok > 50 && stats.crashes + stats.partitions > 0,
            "seed {seed}: too little happened to prove anything: {stats:?}"
        );
        totals.crashes += stats.crashes;
        totals.snapshots_delivered += stats.snapshots_delivered;
        totals.leaders += stats.leaders;
    }
    assert!(
        totals.crashes > 50 && totals.snapshots_delivered > 10 && totals.leaders > 100,
        "the fixed seeds hardly crash members, send snapshots or change leaders: {totals:?}"
    );
}

#[test]
fn a_seed_repeats_exactly() {
    let options = SimOptions {
        duration: Duration::from_secs(10),
        ..SimOptions::new(42)
    };
    let first = run(&options);
    let second = run(&options);
    assert_eq!(
        (first.trace_digest, first.stats.writes_acked),
        (second.trace_digest, second.stats.writes_acked),
        "two runs of seed 42 differ"
    );
}

/// Runs `seeds` with `bugs` put back and returns, per seed, the properties
/// the checkers found violated.
fn violated_with(
    bugs: store::InjectedBugs,
    seeds: std::ops::RangeInclusive<u64>,
) -> Vec<(u64, Vec<&'static str>)> {
    seeds
        .map(|seed| {
            let report = run(&SimOptions {
                bugs,
                ..SimOptions::new(seed)
            });
            println!("seed {seed}:\n{}", report.summary());
            let mut properties: Vec<&'static str> = report
                .violations
                .iter()
                .map(|violation| violation.property)
                .collect();
            properties.dedup();
            (seed, properties)
        })
        .collect()
}

/// Acknowledging writes that were never fsynced: once members crash and lose
/// them, the checkers see it (a leader without a committed entry, two members
/// with different entries at one index, lost writes, or raft itself stopping a
/// member whose log is shorter than what it acknowledged).
#[test]
fn acknowledging_before_fsync_is_caught() {
    let bugs = store::InjectedBugs {
        skip_fsync: true,
        ..Default::default()
    };
    let results = violated_with(bugs, 1..=5);
    for (seed, properties) in &results {
        assert!(
            !properties.is_empty(),
            "seed {seed}: writes acknowledged without fsync went unnoticed"
        );
    }
    let all: Vec<&str> = results
        .iter()
        .flat_map(|(_, found)| found.clone())
        .collect();
    for property in [
        sim::LEADER_COMPLETENESS,
        sim::STATE_MACHINE_SAFETY,
        sim::NO_PANIC,
    ] {
        assert!(
            all.contains(&property),
            "no seed reported {property:?}: {results:?}"
        );
    }
}

/// Serving a linearizable read from local state without a read index: a
/// member behind the leader answers with an old revision, which the
/// revisions checker reports as a stale read in every seed.
#[test]
fn reading_without_a_quorum_is_caught() {
    let bugs = store::InjectedBugs {
        read_without_quorum: true,
        ..Default::default()
    };
    for (seed, properties) in violated_with(bugs, 1..=5) {
        assert!(
            properties.contains(&sim::REVISIONS_FORWARD),
            "seed {seed}: reads without a quorum went unnoticed ({properties:?})"
        );
    }
}

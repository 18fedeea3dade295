//! A short chaos run: three real `shoal store` members on network-namespace test hosts, every fault kind drawn from
//! a fixed seed for about 30 s, and zero violations from every checker. Needs
//! root (CI runs as root) and the workspace's `target/debug/shoal` (built by
//! `cargo nextest run --workspace`; alone: `cargo build -p shoal` first).
//! `SHOAL_CHAOS_SEED` overrides the seed.
//!
//! Part of the default test command. It found the lease-safety bug in
//! TESTING.md ("Bugs the chaos run found"); the named regression test for it
//! is `lease_faults::shoal_a_resumed_leader_does_not_revoke_a_lease_its_successor_kept_alive`.

use std::time::Duration;

use chaos::ChaosArgs;
use chaos::faults::FaultKind;

#[test]
fn a_short_chaos_run_with_every_fault_kind_finds_no_violation() {
    assert!(
        chaos::hosts::is_root(),
        "the chaos run needs root (network namespaces, iptables): run the test suite as root"
    );
    let seed = std::env::var("SHOAL_CHAOS_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(1);
    let dir = tempfile::Builder::new()
        .prefix("shoal-chaos-test-")
        .tempdir()
        .expect("tempdir");
    let args = ChaosArgs {
        duration: Duration::from_secs(30),
        seed: Some(seed),
        faults: FaultKind::all(),
        members: 3,
        shoal: None,
        dir: Some(dir.path().to_path_buf()),
        register_clients: 4,
        check: None,
    };
    let report = chaos::run_chaos(args).expect("the chaos run could not run");
    println!("{}", report.text);
    if report.n_violations() > 0 {
        // Keep the history and the members' logs for the report.
        let kept = dir.keep();
        panic!(
            "seed {seed}: {} violation(s); history and logs kept in {}",
            report.n_violations(),
            kept.display()
        );
    }
}

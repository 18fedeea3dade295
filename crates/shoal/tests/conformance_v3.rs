//! Differential conformance for the rest of etcdctl 3.4 (issue 3, part 7):
//! watch, lease, lock, elect, member, endpoint hashkv, alarm, defrag,
//! snapshot save, move-leader and check perf. Each scenario is data: a list
//! of steps run in order on a fresh etcd cluster and on a fresh shoal
//! cluster, and every etcdctl output (stdout, stderr, exit status) must be
//! the same once what legitimately differs is normalised. Every scenario is
//! also run on two independent etcd clusters, which proves that the
//! normaliser hides only what differs between any two clusters.
//!
//! Long-running commands (`watch`, `lock`, `elect`, `lease keep-alive`) run
//! in the background: a step starts one, later steps wait (bounded) for what
//! it prints, feed its stdin (`watch -i`), check that it is still blocked
//! (lock and election contention), and stop it with SIGINT or end of input.
//!
//! `put`, `get`, `del`, `txn` and `compaction` are covered by
//! `conformance.rs`; this file reuses its harness (`common`) and adds the
//! normalisation that the commands here need: lease ids, the ids of members
//! added during a scenario, the ports given to them, remaining TTLs, hashes,
//! snapshot sizes and paths.
//!
//! Not compared: the verdicts of `check perf`, which measures the machine
//! (see [`check_perf_on_shoal_reports_its_measurements_and_a_verdict`]).
//!
//! To see what is compared:
//! `SHOAL_TEST_SHOW_OUTPUTS=1 cargo test --test conformance_v3 -- --nocapture`.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common::{Cluster, ClusterOptions, Flavor};
use serde_json::Value;

/// A bound on every wait for a background command's output, and on a
/// stopped command's exit. Generous: a busy two-core machine can take
/// seconds to start an etcdctl.
const WAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a blocked `lock` or `elect` is watched before the step concludes
/// that it is still waiting.
const STILL_WAITING_FOR: Duration = Duration::from_millis(1000);
/// `--quota-backend-bytes` of the space-quota scenario.
const QUOTA_BACKEND_BYTES: usize = 2 * 1024 * 1024;
/// The value size of the writes that fill the quota.
const FILL_VALUE_BYTES: usize = 100 * 1024;
/// Enough puts of [`FILL_VALUE_BYTES`] to exceed the quota several times.
const MAX_FILL_PUTS: usize = 200;

// ---------------------------------------------------------------------------
// Scenarios as data.

/// Which members an etcdctl invocation talks to.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// One member, so that response headers name a known member.
    Member(usize),
    /// Every member, in member order.
    All,
}

/// How a background command is stopped.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// SIGINT, as a user's Ctrl-C: `lock` and `elect` release what they hold.
    Interrupt,
    /// Close stdin (`watch -i` ends at end of input).
    EndOfInput,
    /// Wait for it to exit on its own (a cancelled watch, a revoked lease).
    Exit,
}

/// When an [`Step::Eventually`] step stops retrying.
#[derive(Clone, Copy, Debug)]
enum Until {
    EmptyStdout,
    StdoutContains(&'static str),
}

/// What the normaliser does to one step's output beyond the common rules.
#[derive(Clone, Copy, Debug, Default)]
struct Rules {
    /// The lines of stdout are sorted: for commands that print one line per
    /// endpoint in the order the answers arrive, or per member in the order
    /// of their random ids.
    sort_lines: bool,
    /// Runs of identical lines are kept once: `lease keep-alive` prints one
    /// line per keep-alive, and how many fit in a time window is timing.
    collapse_repeats: bool,
    /// stdout is not compared (only stderr and the exit status): after the
    /// quota is filled, counts and revisions depend on how many writes the
    /// storage engine admitted.
    ignore_stdout: bool,
    /// `"isLearner":true` is dropped from stdout: etcd 3.4 loses a learner's
    /// flag when its peer URLs are updated (a bug of etcd 3.4); shoal keeps it.
    /// The README lists this difference.
    drop_learner_flag: bool,
}

#[derive(Clone, Debug)]
enum Step {
    /// One etcdctl invocation, run to completion. Arguments may name values
    /// learnt earlier: `{lease0}` (the first lease id seen, in hex),
    /// `{member1}` (member 1's id, in hex), `{added0}` (the first member
    /// added by the scenario), `{port0}` (a free port reserved for the
    /// scenario), `{dir}` (the cluster's temporary directory) and
    /// `{revision}` (the target's current revision).
    Run {
        args: Vec<String>,
        stdin: Option<String>,
        target: Target,
        rules: Rules,
    },
    /// Runs a read-only command again and again (bounded) until its output
    /// says what it should; records the last output. For what happens on
    /// the server's own schedule: lease expiry, alarms.
    Eventually {
        args: Vec<String>,
        target: Target,
        until: Until,
    },
    /// Starts a long-running etcdctl in the background under `name`.
    Spawn {
        name: &'static str,
        args: Vec<String>,
        target: Target,
        /// Gives it a stdin pipe (for `watch -i`).
        interactive: bool,
        rules: Rules,
    },
    /// Waits (bounded) until `name` has printed `needle` `count` times, on
    /// stdout or stderr. Records nothing: the output is compared when the
    /// command stops, and a needle that never comes shows there.
    WaitFor {
        name: &'static str,
        needle: &'static str,
        count: usize,
    },
    /// Writes one line to `name`'s stdin.
    Feed { name: &'static str, line: String },
    /// Records whether `name` is still running and what it printed after
    /// [`STILL_WAITING_FOR`]: a contended `lock` or `elect` must print
    /// nothing.
    StillWaiting { name: &'static str },
    /// Stops `name` and records its whole output and exit status.
    Stop { name: &'static str, how: Stop },
    /// Puts [`FILL_VALUE_BYTES`] values through gRPC until the server
    /// refuses one (at most [`MAX_FILL_PUTS`]); records the refusal.
    FillUntilRefused,
    /// Waits (bounded) until every running member reports `member_idx` as
    /// leader; records which member each one reports.
    WaitForLeader { member_idx: usize },
    /// Waits until the cluster has run for this long: etcd refuses
    /// membership changes until every voting member has been connected for
    /// 5 s (its `--strict-reconfig-check`, on by default).
    Settle { since_start: Duration },
    /// SIGKILLs one member.
    Kill { member_idx: usize },
    /// Lets a server notice what just happened (a killed peer).
    Sleep(Duration),
}

fn args_of(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

/// `etcdctl <line>` at member 0; the line is split on whitespace.
fn cmd(line: &str) -> Step {
    run_args(&args_of(line).iter().map(String::as_str).collect::<Vec<_>>())
}

/// `etcdctl <args>` at member 0, for arguments with spaces in them.
fn run_args(args: &[&str]) -> Step {
    Step::Run {
        args: args.iter().map(|arg| arg.to_string()).collect(),
        stdin: None,
        target: Target::Member(0),
        rules: Rules::default(),
    }
}

/// `etcdctl <line>`, then `etcdctl <line> -w json`.
fn cmd_and_json(line: &str) -> Vec<Step> {
    vec![cmd(line), cmd(&format!("{line} -w json"))]
}

fn cmd_at(target: Target, line: &str) -> Step {
    with_target(cmd(line), target)
}

fn with_target(mut step: Step, new_target: Target) -> Step {
    match &mut step {
        Step::Run { target, .. } | Step::Eventually { target, .. } | Step::Spawn { target, .. } => {
            *target = new_target
        }
        _ => unreachable!("only commands have a target"),
    }
    step
}

fn with_rules(mut step: Step, new_rules: Rules) -> Step {
    match &mut step {
        Step::Run { rules, .. } | Step::Spawn { rules, .. } => *rules = new_rules,
        _ => unreachable!("only commands have rules"),
    }
    step
}

const SORTED: Rules = Rules {
    sort_lines: true,
    collapse_repeats: false,
    ignore_stdout: false,
    drop_learner_flag: false,
};

const STDOUT_IGNORED: Rules = Rules {
    sort_lines: false,
    collapse_repeats: false,
    ignore_stdout: true,
    drop_learner_flag: false,
};

const LEARNER_FLAG_DROPPED: Rules = Rules {
    sort_lines: false,
    collapse_repeats: false,
    ignore_stdout: false,
    drop_learner_flag: true,
};

/// `etcdctl txn` with its requests on stdin.
fn txn(stdin: &str) -> Step {
    Step::Run {
        args: vec!["txn".to_string()],
        stdin: Some(stdin.to_string()),
        target: Target::Member(0),
        rules: Rules::default(),
    }
}

fn eventually(line: &str, until: Until) -> Step {
    Step::Eventually {
        args: args_of(line),
        target: Target::Member(0),
        until,
    }
}

fn spawn(name: &'static str, line: &str) -> Step {
    spawn_args(
        name,
        &args_of(line).iter().map(String::as_str).collect::<Vec<_>>(),
    )
}

fn spawn_args(name: &'static str, args: &[&str]) -> Step {
    Step::Spawn {
        name,
        args: args.iter().map(|arg| arg.to_string()).collect(),
        target: Target::Member(0),
        interactive: false,
        rules: Rules::default(),
    }
}

fn spawn_interactive(name: &'static str, line: &str) -> Step {
    Step::Spawn {
        name,
        args: args_of(line),
        target: Target::Member(0),
        interactive: true,
        rules: Rules::default(),
    }
}

fn wait_for(name: &'static str, needle: &'static str) -> Step {
    wait_for_n(name, needle, 1)
}

fn wait_for_n(name: &'static str, needle: &'static str, count: usize) -> Step {
    Step::WaitFor {
        name,
        needle,
        count,
    }
}

fn feed(name: &'static str, line: &str) -> Step {
    Step::Feed {
        name,
        line: line.to_string(),
    }
}

fn still_waiting(name: &'static str) -> Step {
    Step::StillWaiting { name }
}

fn stop(name: &'static str, how: Stop) -> Step {
    Step::Stop { name, how }
}

/// Watch: key, range and prefix watches, from a past revision (which is
/// also how each watcher proves it is established before the live writes:
/// it first prints a historical event), --prev-kv, -w json and -w fields,
/// an exec command, a future revision, a compacted revision, and `watch -i`
/// fed from stdin. Starts on a fresh cluster (revision 1).
fn watch_steps() -> Vec<Step> {
    let watchers: [(&str, &str); 6] = [
        ("watch-key", "w/a"),
        ("watch-prefix", "w/b"),
        ("watch-range", "w/b"),
        ("watch-json", "Events"),
        ("watch-fields", "RaftTerm"),
        ("watch-exec", "exec PUT"),
    ];
    let mut steps = vec![
        cmd("put w/a 0"), // 2
        cmd("put w/b 0"), // 3
        spawn("watch-key", "watch w/a --rev=2"),
        spawn("watch-prefix", "watch --prefix w/ --rev=2 --prev-kv"),
        spawn("watch-range", "watch w/a w/c --rev=3"),
        spawn("watch-json", "watch --prefix w/ --rev=2 -w json"),
        spawn("watch-fields", "watch --prefix w/ --rev=3 -w fields"),
        spawn_args(
            "watch-exec",
            &[
                "watch",
                "w/a",
                "--rev=2",
                "--",
                "sh",
                "-c",
                "echo exec $ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_VALUE $ETCD_WATCH_REVISION",
            ],
        ),
    ];
    // Each has printed its history: it is synced, and live writes come next.
    steps.extend(
        watchers
            .iter()
            .map(|&(name, needle)| wait_for(name, needle)),
    );
    steps.extend([
        cmd("put w/a 1"),                             // 4
        cmd("put w/b 2"),                             // 5
        cmd("del w/a"),                               // 6
        txn("\nput w/a 7\nput w/c 8\ndel w/b\n\n\n"), // 7: three events, one revision
        cmd("put w/zz 9"),                            // 8: outside the range watch
        cmd("put w/a end"),                           // 9: every watcher sees this last
    ]);
    for &(name, _) in &watchers {
        let needle = match name {
            "watch-json" => "ZW5k", // "end" in base64
            _ => "end",
        };
        steps.push(wait_for(name, needle));
    }
    steps.extend(
        watchers
            .iter()
            .map(|&(name, _)| stop(name, Stop::Interrupt)),
    );
    steps.extend([
        // A future revision: only the second put is at or after it, whether
        // the watch starts before or after the writes.
        spawn("watch-future", "watch w/f --rev=11"),
        cmd("put w/f f1"), // 10
        cmd("put w/f f2"), // 11
        wait_for("watch-future", "f2"),
        stop("watch-future", Stop::Interrupt),
        // Interactive: one watcher per key so that outputs cannot
        // interleave; progress goes to both.
        spawn_interactive("watch-interactive", "watch -i"),
        feed("watch-interactive", "watch w/a --rev=9"),
        wait_for("watch-interactive", "end"),
        feed("watch-interactive", "watch --prefix w/c --prev-kv"),
        // Give the second watch time to be established: it has no history
        // to print first. Its event is compared below.
        Step::StillWaiting {
            name: "watch-interactive",
        },
        cmd("put w/c 12"), // 12
        wait_for("watch-interactive", "12"),
        feed("watch-interactive", "progress"),
        wait_for_n("watch-interactive", "progress notify", 2),
        feed("watch-interactive", "bogus command"),
        wait_for("watch-interactive", "Invalid command"),
        stop("watch-interactive", Stop::EndOfInput),
        // Usage errors.
        cmd("watch"),
        cmd("watch --prefix"),
        cmd("watch -i w/a"), // stdin is empty: ends at once
        // A compacted start revision cancels the watch.
        cmd("compact 5"),
        spawn("watch-compacted", "watch w/a --rev=2"),
        stop("watch-compacted", Stop::Exit),
        spawn("watch-compacted-json", "watch w/a --rev=3 -w json"),
        stop("watch-compacted-json", Stop::Exit),
    ]);
    steps
}

/// Leases: grant (also below etcd's minimum TTL), list (ordered by expiry),
/// timetolive with and without keys, keep-alive once and in the
/// background until revoked, revoke, expiry, and the errors.
fn lease_steps() -> Vec<Step> {
    let mut steps = vec![
        cmd("lease grant 200"),         // lease0
        cmd("lease grant 100 -w json"), // lease1
        // `lease list` orders by expiry: lease1, lease0, lease2.
        cmd("lease grant 300"), // lease2
        cmd("put --lease={lease0} l/a 1"),
        cmd("put --lease={lease0} l/b 2"),
        cmd("put --lease={lease1} l/c 3 -w json"),
        cmd("get l/ --prefix -w json"),
        cmd("get l/c -w fields"),
    ];
    steps.extend(cmd_and_json("lease list"));
    steps.extend(cmd_and_json("lease timetolive {lease0}"));
    steps.extend(cmd_and_json("lease timetolive --keys {lease0}"));
    steps.extend(cmd_and_json("lease timetolive --keys {lease1}"));
    steps.extend(cmd_and_json("lease timetolive 1234"));
    steps.extend(cmd_and_json("lease keep-alive --once {lease1}"));
    steps.extend([
        cmd("lease revoke {lease0}"),
        cmd("get l/ --prefix -w json"),
        cmd("lease revoke {lease0}"),
        cmd("lease revoke {lease0} -w json"),
        cmd("lease keep-alive --once {lease0}"),
        cmd("lease timetolive --keys {lease0}"),
        cmd("put --lease={lease0} l/d 4"),
        // etcd raises a TTL below its minimum (1.5 election timeouts,
        // rounded up to seconds) to the minimum. This one expires unseen.
        cmd("lease grant 0"), // lease3
        cmd("lease grant notanumber"),
        cmd("lease revoke"),
        cmd("lease timetolive nothex"),
        // A keep-alive loop ends when its lease is revoked.
        cmd("lease grant 3"), // lease4
        with_rules(
            spawn("keep-alive", "lease keep-alive {lease4}"),
            Rules {
                collapse_repeats: true,
                ..Rules::default()
            },
        ),
        wait_for("keep-alive", "keepalived"),
        cmd("lease revoke {lease4} -w json"),
        stop("keep-alive", Stop::Exit),
        // Expiry, on the leader's schedule.
        cmd("lease grant 1"), // lease5
        cmd("put --lease={lease5} l/expiring x"),
        eventually("get l/expiring", Until::EmptyStdout),
        cmd("lease timetolive {lease5}"),
        cmd("get l/ --prefix -w json"),
    ]);
    steps.extend(cmd_and_json("lease list"));
    steps
}

/// `etcdctl lock`: a holder, a second locker that waits for it, the
/// handover, a command run under the lock, and the errors.
fn lock_steps() -> Vec<Step> {
    vec![
        spawn("lock-holder", "lock mylock"),
        wait_for("lock-holder", "mylock/"),
        spawn("lock-waiter", "lock mylock"),
        still_waiting("lock-waiter"),
        cmd("get mylock --prefix -w json --sort-by=CREATE"),
        stop("lock-holder", Stop::Interrupt),
        wait_for("lock-waiter", "mylock/"),
        cmd("get mylock --prefix --keys-only"),
        stop("lock-waiter", Stop::Interrupt),
        cmd("get mylock --prefix -w json"),
        run_args(&[
            "lock",
            "mylock",
            "--",
            "sh",
            "-c",
            "echo holding $ETCD_LOCK_KEY",
        ]),
        cmd("lock --ttl=5 mylock echo hello"),
        cmd("lock mylock false"),
        cmd("lock"),
        cmd("get mylock --prefix -w json"),
    ]
}

/// `etcdctl elect`: an observer (`elect -l`), a leader, a second candidate
/// that waits, the handover, and the errors.
fn elect_steps() -> Vec<Step> {
    vec![
        spawn("observer", "elect -l myelection"),
        spawn("candidate-1", "elect myelection proposal-1"),
        wait_for("candidate-1", "proposal-1"),
        wait_for("observer", "proposal-1"),
        spawn("candidate-2", "elect myelection proposal-2"),
        still_waiting("candidate-2"),
        cmd("get myelection --prefix -w json --sort-by=CREATE"),
        stop("candidate-1", Stop::Interrupt),
        wait_for("candidate-2", "proposal-2"),
        wait_for("observer", "proposal-2"),
        // A late observer sees the current leader at once.
        spawn("late-observer", "elect -l myelection"),
        wait_for("late-observer", "proposal-2"),
        stop("late-observer", Stop::Interrupt),
        stop("candidate-2", Stop::Interrupt),
        stop("observer", Stop::Interrupt),
        cmd("get myelection --prefix -w json"),
        cmd("elect myelection"),
        cmd("elect -l"),
        cmd("elect"),
    ]
}

/// Maintenance on one member: hashkv, alarms, defragmentation, snapshot.
/// `snapshot status` reads the saved file as etcd's bbolt database (after
/// bbolt's consistency check): the same revision and key count on both; the
/// hash covers member ids and URLs, and the size the storage's layout.
fn maintenance_steps() -> Vec<Step> {
    let mut steps = Vec::new();
    steps.extend(cmd_and_json("endpoint hashkv"));
    steps.push(cmd("endpoint hashkv -w table"));
    steps.extend(cmd_and_json("endpoint hashkv --rev=10"));
    steps.extend(cmd_and_json("alarm list"));
    steps.extend(cmd_and_json("alarm disarm"));
    steps.extend([
        cmd("defrag"),
        cmd("defrag -w json"),
        cmd("defrag --cluster"),
        cmd("snapshot save {dir}/snapshot.db"),
        cmd("snapshot status {dir}/snapshot.db -w json"),
        cmd("snapshot save"),
        cmd("move-leader {member0}"),
        cmd("move-leader 1234"),
        cmd("move-leader"),
    ]);
    steps
}

/// Every single-member step, in one scenario on one fresh cluster.
fn single_member_steps() -> Vec<Step> {
    [
        watch_steps(),
        lease_steps(),
        lock_steps(),
        elect_steps(),
        maintenance_steps(),
    ]
    .concat()
}

/// Membership and leadership on a fresh three-member cluster whose first
/// member leads: learners and voters added (never started: the cluster
/// keeps its quorum), updated, promoted (a voter, and a learner that is not
/// in sync), removed; endpoint commands on every member; move-leader.
fn three_member_steps() -> Vec<Step> {
    vec![
        cmd("put k v"),
        // Endpoint commands on every member, in member order.
        cmd_at(Target::All, "endpoint hashkv"),
        cmd_at(Target::All, "endpoint hashkv -w json"),
        with_rules(cmd("endpoint hashkv --cluster"), SORTED),
        with_rules(cmd("endpoint health --cluster"), SORTED),
        with_rules(cmd("endpoint status --cluster"), SORTED),
        cmd_at(Target::All, "alarm list"),
        cmd_at(Target::All, "defrag"),
        with_rules(cmd("defrag --cluster"), SORTED),
        // Leadership: from the leader to member 1, then back; a follower
        // alone cannot move it.
        cmd_at(Target::Member(2), "move-leader {member1}"),
        cmd_at(Target::All, "move-leader {member1}"),
        Step::WaitForLeader { member_idx: 1 },
        cmd_at(Target::All, "endpoint status"),
        cmd_at(Target::All, "move-leader {member1}"),
        cmd_at(Target::All, "move-leader 1234"),
        cmd_at(Target::All, "move-leader {member0} -w json"),
        Step::WaitForLeader { member_idx: 0 },
        cmd_at(Target::All, "endpoint status"),
        cmd("put k2 v2"),
        cmd_at(Target::Member(2), "get k2 -w json"),
        // Membership.
        Step::Settle {
            since_start: Duration::from_secs(6),
        },
        cmd("member add learner-1 --peer-urls=http://127.0.0.1:{port0} --learner"),
        with_rules(cmd("member list"), SORTED),
        cmd("member list -w json"),
        cmd("member promote {added0}"),
        cmd("member promote {added0} -w json"),
        cmd("member promote {member1}"),
        cmd("member promote {member0}"),
        cmd("member promote 1234"),
        cmd("member update {added0} --peer-urls=http://127.0.0.1:{port1}"),
        with_rules(cmd("member list -w json"), LEARNER_FLAG_DROPPED),
        cmd("member remove {added0}"),
        cmd("member remove {added0}"),
        cmd("member add voter-1 --peer-urls=http://127.0.0.1:{port2} -w json"),
        with_rules(cmd("member list"), SORTED),
        cmd("member list -w table"),
        cmd("member update {added1} --peer-urls=http://127.0.0.1:{port3} -w json"),
        cmd("member remove {added1} -w json"),
        cmd("member add dup --peer-urls=http://127.0.0.1:{peer1}"),
        cmd("member add nopeers"),
        cmd("member add --peer-urls=http://127.0.0.1:{port4}"),
        cmd("member update 1234 --peer-urls=http://127.0.0.1:{port4}"),
        cmd("member remove 1234"),
        cmd("member remove"),
        with_rules(cmd("member list"), SORTED),
        // With a member down, etcd refuses the changes that would leave the
        // cluster without a quorum of live members, and accepts the removal
        // of the dead member.
        Step::Kill { member_idx: 2 },
        Step::Sleep(Duration::from_millis(1000)),
        cmd("member remove {member1}"),
        cmd("member add voter-2 --peer-urls=http://127.0.0.1:{port4}"),
        cmd("member remove {member2}"),
        with_rules(cmd("member list"), SORTED),
        cmd("put k3 v3"),
    ]
}

/// The space quota: filled until writes are refused, the NOSPACE alarm,
/// reads and deletes still served, and compaction, defragmentation and
/// `alarm disarm` restoring writes. How much data fits legitimately
/// differs (the storage engines differ), so from the fill on, outputs that
/// count or number revisions are compared only by exit status and stderr.
fn quota_steps() -> Vec<Step> {
    vec![
        cmd("put before v"),
        Step::FillUntilRefused,
        eventually("alarm list", Until::StdoutContains("NOSPACE")),
        cmd("put after v"),
        cmd("lease grant 100"),
        cmd("get before"),
        with_rules(cmd("del --prefix fill/"), STDOUT_IGNORED),
        cmd("put after-delete v"),
        with_rules(cmd("compact {revision}"), STDOUT_IGNORED),
        cmd("defrag"),
        cmd("alarm list"),
        cmd("alarm disarm"),
        cmd("alarm list"),
        cmd("put after-disarm v"),
        cmd("get after-disarm"),
        cmd("get --prefix fill/ --keys-only"),
    ]
}

// ---------------------------------------------------------------------------
// Background etcdctl processes.

/// An etcdctl running in the background, its output collected as it comes.
/// Dropping it SIGKILLs it.
struct Background {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Background {
    fn spawn(endpoints: &str, args: &[String], interactive: bool) -> Background {
        let mut command = Command::new(common::ETCDCTL);
        command
            .env("ETCDCTL_API", "3")
            .env_remove("ETCDCTL_ENDPOINTS")
            .arg(format!("--endpoints={endpoints}"))
            .arg("--command-timeout=5s")
            .arg("--dial-timeout=2s")
            .args(args)
            .stdin(if interactive {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect_in_background(child.stdout.take().expect("piped stdout"), &stdout);
        collect_in_background(child.stderr.take().expect("piped stderr"), &stderr);
        Background {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
        }
    }

    fn output(&self) -> (String, String) {
        let text = |bytes: &Arc<Mutex<Vec<u8>>>| {
            String::from_utf8_lossy(&bytes.lock().expect("output lock")).into_owned()
        };
        (text(&self.stdout), text(&self.stderr))
    }

    /// Waits until stdout and stderr together hold `needle` `count` times.
    fn wait_for(&self, needle: &str, count: usize) -> bool {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            let (stdout, stderr) = self.output();
            if stdout.matches(needle).count() + stderr.matches(needle).count() >= count {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn feed(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("an interactive command");
        // A command that exited has closed its stdin: that shows in its output.
        let _ = writeln!(stdin, "{line}").and_then(|()| stdin.flush());
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the command and returns its output and how it ended.
    fn stop(&mut self, how: Stop) -> (String, String, String) {
        match how {
            Stop::Interrupt => {
                let _ = Command::new("kill")
                    .arg("-INT")
                    .arg(self.child.id().to_string())
                    .status();
            }
            Stop::EndOfInput => drop(self.stdin.take()),
            Stop::Exit => {}
        }
        let deadline = Instant::now() + WAIT_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for etcdctl") {
                break describe_status(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break format!("still running after {WAIT_TIMEOUT:?} ({how:?}): killed");
            }
            thread::sleep(Duration::from_millis(10));
        };
        // The readers see end of file once the pipes close; a command run
        // by `lock` or `watch` may hold them a moment longer.
        thread::sleep(Duration::from_millis(50));
        let (stdout, stderr) = self.output();
        (stdout, stderr, status)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect_in_background(mut pipe: impl Read + Send + 'static, into: &Arc<Mutex<Vec<u8>>>) {
    let into = Arc::clone(into);
    thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n_read) = pipe.read(&mut buffer) {
            if n_read == 0 {
                break;
            }
            into.lock()
                .expect("output lock")
                .extend_from_slice(&buffer[..n_read]);
        }
    });
}

fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => format!("{status}"),
    }
}

// ---------------------------------------------------------------------------
// Running a scenario.

/// The normalised output of one step.
#[derive(Clone, PartialEq, Eq)]
struct Transcript {
    step: String,
    stdout: String,
    stderr: String,
    status: String,
}

impl std::fmt::Display for Transcript {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{}\n  stdout:\n{}  stderr:\n{}",
            self.status,
            indent(&self.stdout),
            indent(&self.stderr)
        )
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("    {line}\n")).collect()
}

/// Whether a learnt id is a lease or a member added by the scenario.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum IdKind {
    Lease,
    AddedMember,
}

/// Ids the cluster chose during the scenario, numbered in the order the
/// outputs first show them (the same order on every cluster, since the
/// steps are the same).
#[derive(Default)]
struct Learnt {
    ids: Vec<(u64, IdKind)>,
}

impl Learnt {
    fn placeholder(&self, id: u64) -> Option<String> {
        let (kind, kind_idx) = self.index_of(id)?;
        Some(match kind {
            IdKind::Lease => format!("<lease{kind_idx}>"),
            // Starts like `<member0>` so that the common rule that sorts
            // `member list` rows by member sorts it with them.
            IdKind::AddedMember => format!("<member+{kind_idx}>"),
        })
    }

    fn index_of(&self, id: u64) -> Option<(IdKind, usize)> {
        let (_, kind) = self.ids.iter().find(|(learnt, _)| *learnt == id)?;
        let kind_idx = self
            .ids
            .iter()
            .filter(|(_, other)| other == kind)
            .position(|(learnt, _)| *learnt == id)?;
        Some((*kind, kind_idx))
    }

    fn nth(&self, kind: IdKind, kind_idx: usize) -> Option<u64> {
        self.ids
            .iter()
            .filter(|(_, other)| *other == kind)
            .nth(kind_idx)
            .map(|(id, _)| *id)
    }
}

/// Anything below this is a count, revision, size or hash, never an id the
/// cluster chose (etcd's and shoal's lease and member ids use all 64 bits).
const SMALLEST_ID: u64 = 1 << 32;

/// One scenario being run on one cluster.
struct Session<'a> {
    cluster: &'a mut Cluster,
    started: Instant,
    learnt: Learnt,
    /// Free ports reserved for members that the scenario adds.
    ports: Vec<u16>,
    background: HashMap<&'static str, (Background, Rules, String)>,
    transcripts: Vec<Transcript>,
}

impl<'a> Session<'a> {
    fn new(cluster: &'a mut Cluster) -> Session<'a> {
        Session {
            cluster,
            started: Instant::now(),
            learnt: Learnt::default(),
            ports: common::free_ports(5),
            background: HashMap::new(),
            transcripts: Vec::new(),
        }
    }

    fn endpoints(&self, target: Target) -> String {
        match target {
            Target::Member(member_idx) => self.cluster.endpoint(member_idx),
            Target::All => self.cluster.endpoints().join(","),
        }
    }

    /// Replaces `{lease0}`, `{member1}`, `{added0}`, `{port0}`, `{peer1}`,
    /// `{dir}` and `{revision}` in an argument.
    fn substitute(&self, arg: &str, target: Target) -> String {
        let mut substituted = String::new();
        let mut rest = arg;
        while let Some(start) = rest.find('{') {
            let end = start + rest[start..].find('}').expect("a closed {name}");
            substituted.push_str(&rest[..start]);
            let name = &rest[start + 1..end];
            let number =
                |prefix: &str| -> Option<usize> { name.strip_prefix(prefix)?.parse().ok() };
            let value = if let Some(idx) = number("lease") {
                let id = self.learnt.nth(IdKind::Lease, idx);
                id.map(|id| format!("{id:x}"))
            } else if let Some(idx) = number("added") {
                let id = self.learnt.nth(IdKind::AddedMember, idx);
                id.map(|id| format!("{id:x}"))
            } else if let Some(idx) = number("member") {
                Some(format!("{:x}", self.cluster.identities().member_ids[idx]))
            } else if let Some(idx) = number("port") {
                Some(self.ports[idx].to_string())
            } else if let Some(idx) = number("peer") {
                Some(self.cluster.identities().peer_ports[idx].to_string())
            } else if name == "dir" {
                Some(self.cluster.dir().display().to_string())
            } else if name == "revision" {
                Some(self.current_revision(target).to_string())
            } else {
                panic!("unknown argument placeholder {{{name}}}")
            };
            // An id the scenario never learnt (because an earlier step failed)
            // stays as a name etcdctl refuses, which shows in the outputs.
            substituted.push_str(&value.unwrap_or_else(|| format!("unknown-{name}")));
            rest = &rest[end + 1..];
        }
        substituted.push_str(rest);
        substituted
    }

    fn current_revision(&self, target: Target) -> i64 {
        let member_idx = match target {
            Target::Member(member_idx) => member_idx,
            Target::All => 0,
        };
        let stdout = self
            .cluster
            .etcdctl_ok_at(member_idx, &["get", "revision-probe", "-w", "json"]);
        let json: Value = serde_json::from_str(&stdout).expect("get -w json is JSON");
        json["header"]["revision"]
            .as_i64()
            .expect("a header revision")
    }

    fn run(&mut self, steps: &[Step]) -> Vec<Transcript> {
        for step in steps {
            self.run_step(step);
        }
        // A scenario stops everything it started; one left running is a
        // scenario bug.
        let mut left: Vec<&str> = self.background.keys().copied().collect();
        left.sort();
        assert!(left.is_empty(), "the scenario never stopped {left:?}");
        std::mem::take(&mut self.transcripts)
    }

    fn run_step(&mut self, step: &Step) {
        match step {
            Step::Run {
                args,
                stdin,
                target,
                rules,
            } => {
                let substituted: Vec<String> = args
                    .iter()
                    .map(|arg| self.substitute(arg, *target))
                    .collect();
                let arg_refs: Vec<&str> = substituted.iter().map(String::as_str).collect();
                let output = common::etcdctl_command(
                    &self.endpoints(*target),
                    "5s",
                    &arg_refs,
                    stdin.as_deref().map(str::as_bytes),
                );
                let step = describe_command(args, *target);
                self.record(
                    step,
                    args,
                    *rules,
                    &String::from_utf8_lossy(&output.stdout),
                    &String::from_utf8_lossy(&output.stderr),
                    describe_status(output.status),
                );
            }
            Step::Eventually {
                args,
                target,
                until,
            } => {
                let substituted: Vec<String> = args
                    .iter()
                    .map(|arg| self.substitute(arg, *target))
                    .collect();
                let arg_refs: Vec<&str> = substituted.iter().map(String::as_str).collect();
                let deadline = Instant::now() + WAIT_TIMEOUT;
                let output = loop {
                    let output =
                        common::etcdctl_command(&self.endpoints(*target), "5s", &arg_refs, None);
                    let stdout = String::from_utf8_lossy(&output.stdout);
                    let done = match until {
                        Until::EmptyStdout => stdout.is_empty(),
                        Until::StdoutContains(needle) => {
                            output.status.success() && stdout.contains(needle)
                        }
                    };
                    if done || Instant::now() >= deadline {
                        break output;
                    }
                    thread::sleep(Duration::from_millis(100));
                };
                let step = format!("{} (until {until:?})", describe_command(args, *target));
                self.record(
                    step,
                    args,
                    Rules::default(),
                    &String::from_utf8_lossy(&output.stdout),
                    &String::from_utf8_lossy(&output.stderr),
                    describe_status(output.status),
                );
            }
            Step::Spawn {
                name,
                args,
                target,
                interactive,
                rules,
            } => {
                let substituted: Vec<String> = args
                    .iter()
                    .map(|arg| self.substitute(arg, *target))
                    .collect();
                let process =
                    Background::spawn(&self.endpoints(*target), &substituted, *interactive);
                let described = format!("{name}: {}", describe_command(args, *target));
                let previous = self.background.insert(name, (process, *rules, described));
                assert!(previous.is_none(), "two background commands named {name}");
            }
            Step::WaitFor {
                name,
                needle,
                count,
            } => {
                let (process, _, _) = self.process(name);
                // A needle that never comes shows in the command's output
                // when it stops; this only bounds the wait.
                process.wait_for(needle, *count);
            }
            Step::Feed { name, line } => {
                let (process, _, _) = self.process(name);
                process.feed(line);
            }
            Step::StillWaiting { name } => {
                thread::sleep(STILL_WAITING_FOR);
                let (process, _, described) = self.process(name);
                let running = process.is_running();
                let (stdout, stderr) = process.output();
                let step = format!("{described} (after {STILL_WAITING_FOR:?})");
                let status = if running { "running" } else { "exited" }.to_string();
                let args = args_of(&step);
                self.record(step, &args, Rules::default(), &stdout, &stderr, status);
            }
            Step::Stop { name, how } => {
                let (mut process, rules, described) = self
                    .background
                    .remove(name)
                    .unwrap_or_else(|| panic!("no background command named {name}"));
                let (stdout, stderr, status) = process.stop(*how);
                let step = format!("{described} (stopped: {how:?})");
                let args = args_of(&described);
                self.record(step, &args, rules, &stdout, &stderr, status);
            }
            Step::WaitForLeader { member_idx } => {
                let leader_id = self.cluster.identities().member_ids[*member_idx];
                let deadline = Instant::now() + WAIT_TIMEOUT;
                let leaders = loop {
                    let leaders: Vec<Option<u64>> = (0..self.cluster.n_members())
                        .filter(|&idx| self.cluster.is_running(idx))
                        .map(|idx| self.cluster.status(idx).map(|status| status.leader))
                        .collect();
                    if leaders.iter().all(|&leader| leader == Some(leader_id))
                        || Instant::now() >= deadline
                    {
                        break leaders;
                    }
                    thread::sleep(Duration::from_millis(100));
                };
                let identities = self.cluster.identities();
                let stdout: String = leaders
                    .iter()
                    .enumerate()
                    .map(|(idx, leader)| {
                        let leader = leader
                            .and_then(|id| identities.member_ids.iter().position(|&m| m == id))
                            .map_or("none".to_string(), |leader_idx| {
                                format!("member {leader_idx}")
                            });
                        format!("member {idx} follows {leader}\n")
                    })
                    .collect();
                self.transcripts.push(Transcript {
                    step: format!("wait until member {member_idx} leads"),
                    stdout,
                    stderr: String::new(),
                    status: String::new(),
                });
            }
            Step::Settle { since_start } => {
                thread::sleep(since_start.saturating_sub(self.started.elapsed()));
            }
            Step::Kill { member_idx } => self.cluster.kill(*member_idx),
            Step::Sleep(duration) => thread::sleep(*duration),
            Step::FillUntilRefused => {
                let outcome = fill_until_refused(&self.cluster.endpoint(0));
                self.transcripts.push(Transcript {
                    step: format!("put {FILL_VALUE_BYTES}-byte values through gRPC until refused"),
                    stdout: outcome,
                    stderr: String::new(),
                    status: String::new(),
                });
            }
        }
    }

    fn process(&mut self, name: &str) -> &mut (Background, Rules, String) {
        self.background
            .get_mut(name)
            .unwrap_or_else(|| panic!("no background command named {name}"))
    }

    fn record(
        &mut self,
        step: String,
        args: &[String],
        rules: Rules,
        stdout: &str,
        stderr: &str,
        status: String,
    ) {
        let kind = if args.first().is_some_and(|arg| arg == "member")
            && args.get(1).is_some_and(|arg| arg == "add")
        {
            IdKind::AddedMember
        } else {
            IdKind::Lease
        };
        let is_hashkv = args.iter().any(|arg| arg == "hashkv");
        let stdout = if rules.ignore_stdout {
            "<not compared>\n".to_string()
        } else {
            self.normalize(stdout, kind, rules, is_hashkv)
        };
        // `endpoint health` writes its lines to stderr.
        let stderr_rules = Rules {
            sort_lines: rules.sort_lines,
            ..Rules::default()
        };
        let stderr = self.normalize(stderr, kind, stderr_rules, false);
        self.transcripts.push(Transcript {
            step,
            stdout,
            stderr,
            status,
        });
    }

    /// The common normaliser, between this suite's two passes: the first
    /// learns and replaces the ids the cluster chose during the scenario
    /// (the common one knows only the founding members'), the second hides
    /// what the commands of this suite print that varies legitimately.
    fn normalize(&mut self, text: &str, kind: IdKind, rules: Rules, is_hashkv: bool) -> String {
        let dir = self.cluster.dir().display().to_string();
        let text = text.replace(&dir, "<dir>");
        let mut text = self.replace_ports(&text);
        text = text
            .lines()
            .map(|line| self.anonymise_line(line, kind))
            .collect::<Vec<_>>()
            .join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        let normalized = self.cluster.normalize(&text);
        finish_normalising(&normalized, rules, is_hashkv)
    }

    fn replace_ports(&self, text: &str) -> String {
        let mut text = text.to_string();
        for (port_idx, port) in self.ports.iter().enumerate() {
            text = text.replace(&format!("127.0.0.1:{port}"), &format!("<port{port_idx}>"));
        }
        text
    }

    /// Learns and replaces ids in one line of output, JSON or text.
    fn anonymise_line(&mut self, line: &str, kind: IdKind) -> String {
        let trimmed = line.trim_start();
        if (trimmed.starts_with('{') || trimmed.starts_with('['))
            && let Ok(mut json) = serde_json::from_str::<Value>(trimmed)
        {
            self.anonymise_json(&mut json, kind);
            return json.to_string();
        }
        self.anonymise_text(line, kind)
    }

    fn anonymise_json(&mut self, value: &mut Value, kind: IdKind) {
        match value {
            Value::Object(fields) => {
                for (name, field) in fields.iter_mut() {
                    match (name.as_str(), &*field) {
                        // Keys and values are base64: lock and election keys
                        // end in their lease id.
                        ("key" | "value", Value::String(encoded)) => {
                            if let Some(decoded) = base64_decode(encoded)
                                .and_then(|bytes| String::from_utf8(bytes).ok())
                            {
                                let anonymised = self.anonymise_text(&decoded, kind);
                                *field = Value::String(base64_encode(anonymised.as_bytes()));
                            }
                        }
                        _ => self.anonymise_json(field, kind),
                    }
                }
            }
            Value::Array(values) => {
                for value in values {
                    self.anonymise_json(value, kind);
                }
            }
            Value::Number(number) => {
                if let Some(placeholder) = number
                    .as_u64()
                    .and_then(|id| self.placeholder_for(id, kind, false))
                {
                    *value = Value::String(placeholder);
                }
            }
            Value::String(text) => *text = self.anonymise_text(text, kind),
            Value::Bool(_) | Value::Null => {}
        }
    }

    /// The placeholder of an id learnt before, or of one learnt now: a
    /// value too large to be anything but an id the cluster chose, or one
    /// printed where etcdctl prints an id (`hex_context`).
    fn placeholder_for(&mut self, id: u64, kind: IdKind, hex_context: bool) -> Option<String> {
        let identities = self.cluster.identities();
        if id == identities.cluster_id || identities.member_ids.contains(&id) {
            // The common normaliser's.
            return None;
        }
        if let Some(placeholder) = self.learnt.placeholder(id) {
            return Some(placeholder);
        }
        if id >= SMALLEST_ID || (hex_context && id >= SMALLEST_ID >> 8) {
            self.learnt.ids.push((id, kind));
            return self.learnt.placeholder(id);
        }
        None
    }

    /// Replaces ids in text. etcdctl prints lease and member ids in hex
    /// (`lease 694d… granted`, `Member 8e9e… added`, `mylock/694d…`, the
    /// lines of `lease list`) and in decimal (`-w fields`).
    fn anonymise_text(&mut self, line: &str, kind: IdKind) -> String {
        let whole_line_is_id = line.len() == 16 && line.chars().all(|c| c.is_ascii_hexdigit());
        let mut replaced = String::new();
        let mut rest = line;
        let mut previous_word = "";
        while let Some(start) = rest.find(|c: char| c.is_ascii_alphanumeric()) {
            let before = &rest[..start];
            replaced.push_str(before);
            let token_len = rest[start..]
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(rest.len() - start);
            let token = &rest[start..start + token_len];
            let is_lower_hex = token
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
            let hex_context = is_lower_hex
                && (whole_line_is_id
                    || before.ends_with('/')
                    || (before == " " && matches!(previous_word, "lease" | "Member")));
            let all_digits = token.chars().all(|c| c.is_ascii_digit());
            let value = if hex_context || (is_lower_hex && !all_digits && token.len() >= 13) {
                u64::from_str_radix(token, 16).ok()
            } else if all_digits {
                // An id printed in hex can be all digits (`member list`
                // starts each row with one): read as hex, it is an id learnt
                // before; read as decimal, it would be learnt again as a new
                // one (a CI run of 880a5c2 showed an added member as
                // `<lease0>` that way).
                u64::from_str_radix(token, 16)
                    .ok()
                    .filter(|id| self.learnt.placeholder(*id).is_some())
                    .or_else(|| token.parse::<u64>().ok())
            } else {
                None
            };
            let placeholder = value.and_then(|id| self.placeholder_for(id, kind, hex_context));
            replaced.push_str(placeholder.as_deref().unwrap_or(token));
            previous_word = token;
            rest = &rest[start + token_len..];
        }
        replaced.push_str(rest);
        replaced
    }
}

fn describe_command(args: &[String], target: Target) -> String {
    let shown: Vec<String> = args
        .iter()
        .map(|arg| {
            if arg.contains(' ') {
                format!("'{arg}'")
            } else {
                arg.clone()
            }
        })
        .collect();
    let at = match target {
        Target::Member(member_idx) => format!("member {member_idx}"),
        Target::All => "every member".to_string(),
    };
    format!("etcdctl {} (at {at})", shown.join(" "))
}

/// The rules that follow the common normaliser: what the commands of this
/// suite print that varies legitimately between two clusters.
fn finish_normalising(text: &str, rules: Rules, is_hashkv: bool) -> String {
    let mut lines: Vec<String> = text
        .lines()
        .map(|line| {
            if rules.drop_learner_flag {
                line.replace(",\"isLearner\":true", "")
            } else {
                line.to_string()
            }
        })
        .collect();
    if rules.sort_lines {
        lines.sort();
    }
    if rules.collapse_repeats {
        lines.dedup();
    }
    // Hashes are numbered by first appearance in the output, so that "every
    // member has the same hash" and "they differ" still show.
    let mut hashes: Vec<String> = Vec::new();
    let mut hash_placeholder = |hash: String| -> String {
        let hash_idx = hashes
            .iter()
            .position(|seen| *seen == hash)
            .unwrap_or_else(|| {
                hashes.push(hash);
                hashes.len() - 1
            });
        format!("<hash{hash_idx}>")
    };
    let mut in_hash_table = false;
    let lines: Vec<String> = lines
        .into_iter()
        .map(|line| {
            let trimmed = line.trim_start();
            if (trimmed.starts_with('{') || trimmed.starts_with('['))
                && let Ok(mut json) = serde_json::from_str::<Value>(trimmed)
            {
                finish_json(&mut json, &mut hash_placeholder);
                return json.to_string();
            }
            // `-w fields`: the term depends on election timing.
            if line.starts_with("\"RaftTerm\" : ") {
                return "\"RaftTerm\" : <term>".to_string();
            }
            // etcd prints "Member %16x added": the padding follows the id.
            if line.starts_with("Member ") {
                return line
                    .split(' ')
                    .filter(|word| !word.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
            }
            // `member add` lists the members in the order of their ids.
            if let Some(members) = line
                .strip_prefix("ETCD_INITIAL_CLUSTER=\"")
                .and_then(|rest| rest.strip_suffix('"'))
            {
                let mut members: Vec<&str> = members.split(',').collect();
                members.sort();
                return format!("ETCD_INITIAL_CLUSTER=\"{}\"", members.join(","));
            }
            // `lease timetolive`: the remaining TTL is timing, and the keys
            // come in the order of a Go map.
            let line = sort_attached_keys(&line);
            if let Some(line) = normalise_remaining_ttl(&line) {
                return line;
            }
            if is_hashkv {
                // Table: "| ENDPOINT | HASH |" then rows.
                if line.starts_with("| ") {
                    let cells: Vec<&str> =
                        line.trim_matches('|').split('|').map(str::trim).collect();
                    if cells.last() == Some(&"HASH") {
                        in_hash_table = true;
                        return line;
                    }
                    if in_hash_table && cells.len() == 2 {
                        return format!(
                            "| {} | {} |",
                            cells[0],
                            hash_placeholder(cells[1].to_string())
                        );
                    }
                }
                // Simple: "endpoint, hash".
                if let Some((endpoint, hash)) = line.rsplit_once(", ")
                    && hash.chars().all(|c| c.is_ascii_digit())
                {
                    return format!("{endpoint}, {}", hash_placeholder(hash.to_string()));
                }
            }
            line
        })
        .collect();
    let mut normalized = lines.join("\n");
    if text.ends_with('\n') {
        normalized.push('\n');
    }
    normalized
}

fn finish_json(value: &mut Value, hash_placeholder: &mut dyn FnMut(String) -> String) {
    match value {
        Value::Object(fields) => {
            // `lease timetolive -w json`: the remaining TTL is timing.
            let granted_ttl = fields.get("granted-ttl").and_then(Value::as_i64);
            for (name, field) in fields.iter_mut() {
                let placeholder = match (name.as_str(), &*field) {
                    // The snapshot log lines' time stamps are numbers.
                    ("ts", Value::Number(_)) => Some("<ts>".to_string()),
                    // Snapshot sizes are the storage engine's own.
                    ("size", Value::String(_)) => Some("<size>".to_string()),
                    // `snapshot status -w json`: the file's bytes.
                    ("totalSize", Value::Number(_)) => Some("<size>".to_string()),
                    ("hash", Value::Number(hash)) => Some(hash_placeholder(hash.to_string())),
                    // `lease timetolive --keys -w json`: a Go map's order.
                    ("keys", Value::Array(keys)) => {
                        let mut keys = keys.clone();
                        keys.sort_by_key(Value::to_string);
                        *field = Value::Array(keys);
                        None
                    }
                    ("ttl", Value::Number(ttl)) => match (ttl.as_i64(), granted_ttl) {
                        (Some(ttl), Some(granted)) if remaining_is_plausible(ttl, granted) => {
                            Some("<remaining>".to_string())
                        }
                        _ => None,
                    },
                    _ => None,
                };
                match placeholder {
                    Some(placeholder) => *field = Value::String(placeholder),
                    None => finish_json(field, hash_placeholder),
                }
            }
        }
        Value::Array(values) => {
            for value in values {
                finish_json(value, hash_placeholder);
            }
        }
        _ => {}
    }
}

/// A remaining TTL that a lease granted `granted` seconds can have a few
/// seconds into a scenario (a leader change may extend it a little).
fn remaining_is_plausible(remaining: i64, granted: i64) -> bool {
    remaining > 0 && remaining <= granted + 2 && remaining + 15 >= granted
}

/// "…, attached keys([l/b l/a])" becomes "…, attached keys([l/a l/b])".
fn sort_attached_keys(line: &str) -> String {
    let Some((before, keys)) = line.split_once("attached keys([") else {
        return line.to_string();
    };
    let Some((keys, after)) = keys.split_once("])") else {
        return line.to_string();
    };
    let mut keys: Vec<&str> = keys.split(' ').collect();
    keys.sort();
    format!("{before}attached keys([{}]){after}", keys.join(" "))
}

/// "lease X granted with TTL(200s), remaining(198s)…" with a plausible
/// remaining TTL becomes "…, remaining(<remaining>)…".
fn normalise_remaining_ttl(line: &str) -> Option<String> {
    let granted_start = line.find("TTL(")? + "TTL(".len();
    let granted: i64 = line[granted_start..].split("s)").next()?.parse().ok()?;
    let remaining_start = line.find("remaining(")? + "remaining(".len();
    let remaining_len = line[remaining_start..].find("s)")?;
    let remaining: i64 = line[remaining_start..remaining_start + remaining_len]
        .parse()
        .ok()?;
    remaining_is_plausible(remaining, granted).then(|| {
        format!(
            "{}<remaining>{}",
            &line[..remaining_start],
            &line[remaining_start + remaining_len..]
        )
    })
}

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, as Go's encoding/json writes byte slices.
fn base64_encode(bytes: &[u8]) -> String {
    let mut encoded = String::new();
    for chunk in bytes.chunks(3) {
        let triple = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let bits =
            (u32::from(triple[0]) << 16) | (u32::from(triple[1]) << 8) | u32::from(triple[2]);
        for sextet_idx in 0..4 {
            if sextet_idx <= chunk.len() {
                let sextet = (bits >> (18 - 6 * sextet_idx)) & 0x3f;
                encoded.push(char::from(BASE64_ALPHABET[sextet as usize]));
            } else {
                encoded.push('=');
            }
        }
    }
    encoded
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let mut bytes = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let n_padding = chunk.iter().rev().take_while(|&&byte| byte == b'=').count();
        if n_padding > 2 {
            return None;
        }
        let mut bits = 0u32;
        for &byte in &chunk[..4 - n_padding] {
            let sextet = BASE64_ALPHABET.iter().position(|&letter| letter == byte)?;
            bits = (bits << 6) | sextet as u32;
        }
        bits <<= 6 * n_padding;
        let decoded = [(bits >> 16) as u8, (bits >> 8) as u8, bits as u8];
        bytes.extend_from_slice(&decoded[..3 - n_padding]);
    }
    Some(bytes)
}

/// Puts values until the server refuses one; says whether any was
/// accepted first and what the refusal was (gRPC code and message).
fn fill_until_refused(endpoint: &str) -> String {
    use proto::etcdserverpb::PutRequest;
    use proto::etcdserverpb::kv_client::KvClient;
    let runtime = common::tokio_runtime();
    runtime.block_on(async {
        let mut client = match KvClient::connect(endpoint.to_string()).await {
            Ok(client) => client,
            Err(error) => return format!("cannot connect: {error}\n"),
        };
        for put_idx in 0..MAX_FILL_PUTS {
            let request = PutRequest {
                key: format!("fill/{put_idx:04}").into_bytes().into(),
                value: vec![b'x'; FILL_VALUE_BYTES].into(),
                ..Default::default()
            };
            match tokio::time::timeout(common::GRPC_REQUEST_TIMEOUT, client.put(request)).await {
                Ok(Ok(_)) => {}
                Ok(Err(status)) => {
                    return format!(
                        "accepted some puts first: {}\nrefused: {:?}: {}\n",
                        put_idx > 0,
                        status.code(),
                        status.message()
                    );
                }
                Err(_) => return format!("put {put_idx} timed out\n"),
            }
        }
        format!("all {MAX_FILL_PUTS} puts accepted\n")
    })
}

// ---------------------------------------------------------------------------
// Comparing.

#[derive(Clone, Copy)]
enum Scenario {
    SingleMember,
    ThreeMembers,
    Quota,
}

impl Scenario {
    fn steps(self) -> Vec<Step> {
        match self {
            Scenario::SingleMember => single_member_steps(),
            Scenario::ThreeMembers => three_member_steps(),
            Scenario::Quota => quota_steps(),
        }
    }

    fn n_members(self) -> usize {
        match self {
            Scenario::ThreeMembers => 3,
            Scenario::SingleMember | Scenario::Quota => 1,
        }
    }

    fn options(self) -> ClusterOptions {
        let mut options = ClusterOptions {
            preferred_leader: Some(0),
            ..ClusterOptions::default()
        };
        if let Scenario::Quota = self {
            options
                .extra_args
                .push(format!("--quota-backend-bytes={QUOTA_BACKEND_BYTES}"));
        }
        options
    }

    /// etcd's transcript, computed once per test process: the etcd-against-
    /// etcd test and the shoal-against-etcd test share it.
    fn reference(self) -> Vec<Transcript> {
        static SINGLE_MEMBER: OnceLock<Vec<Transcript>> = OnceLock::new();
        static THREE_MEMBERS: OnceLock<Vec<Transcript>> = OnceLock::new();
        static QUOTA: OnceLock<Vec<Transcript>> = OnceLock::new();
        let cell = match self {
            Scenario::SingleMember => &SINGLE_MEMBER,
            Scenario::ThreeMembers => &THREE_MEMBERS,
            Scenario::Quota => &QUOTA,
        };
        cell.get_or_init(|| self.run(Flavor::Etcd)).clone()
    }

    fn run(self, flavor: Flavor) -> Vec<Transcript> {
        let started = Instant::now();
        let mut cluster = start(flavor, self.n_members(), self.options());
        let transcripts = Session::new(&mut cluster).run(&self.steps());
        if std::env::var_os("SHOAL_TEST_SHOW_OUTPUTS").is_some() {
            println!("==== {flavor:?}, {} s", started.elapsed().as_secs_f32());
            for transcript in &transcripts {
                println!("$ {}\n{transcript}", transcript.step);
            }
        }
        transcripts
    }
}

/// A fresh cluster whose first member leads, so that outputs which say who
/// leads are comparable.
fn start(flavor: Flavor, n_members: usize, options: ClusterOptions) -> Cluster {
    Cluster::start_led_by_first(flavor, n_members, options)
}

/// Panics with every difference between two transcripts of one scenario.
fn assert_same(
    expected_flavor: Flavor,
    expected: &[Transcript],
    actual_flavor: Flavor,
    actual: &[Transcript],
) {
    assert_eq!(
        expected.len(),
        actual.len(),
        "the scenario recorded a different number of steps"
    );
    let mut report = String::new();
    let mut n_differences = 0;
    for (step_idx, (expected_transcript, actual_transcript)) in
        expected.iter().zip(actual).enumerate()
    {
        if expected_transcript != actual_transcript {
            n_differences += 1;
            report.push_str(&format!(
                "\n#{step_idx} `{}`\n  {expected_flavor:?} (expected): {expected_transcript}  {actual_flavor:?} (actual): {actual_transcript}",
                expected_transcript.step
            ));
        }
    }
    assert!(
        n_differences == 0,
        "{n_differences} of {} outputs differ between {expected_flavor:?} and {actual_flavor:?}:{report}",
        expected.len()
    );
}

fn etcd_matches_etcd(scenario: Scenario) {
    let reference = scenario.reference();
    let second = scenario.run(Flavor::Etcd);
    assert_same(Flavor::Etcd, &reference, Flavor::Etcd, &second);
}

fn shoal_matches_etcd(scenario: Scenario) {
    let actual = scenario.run(Flavor::Shoal);
    let reference = scenario.reference();
    assert_same(Flavor::Etcd, &reference, Flavor::Shoal, &actual);
}

#[test]
fn single_member_etcd_matches_etcd() {
    etcd_matches_etcd(Scenario::SingleMember);
}

#[test]
fn single_member_shoal_matches_etcd() {
    shoal_matches_etcd(Scenario::SingleMember);
}

#[test]
fn three_members_etcd_matches_etcd() {
    etcd_matches_etcd(Scenario::ThreeMembers);
}

#[test]
fn three_members_shoal_matches_etcd() {
    shoal_matches_etcd(Scenario::ThreeMembers);
}

#[test]
fn space_quota_etcd_matches_etcd() {
    etcd_matches_etcd(Scenario::Quota);
}

#[test]
fn space_quota_shoal_matches_etcd() {
    shoal_matches_etcd(Scenario::Quota);
}

/// `check perf --load=s` runs for 60 s on any server, too long to run
/// twice more on etcd in every test run; and its verdicts are measurements
/// of this machine, which differ between any two runs. So it runs once,
/// against shoal, and must report its three measurements and a verdict in
/// etcdctl's words, the exit status agreeing with the verdict.
#[test]
fn check_perf_on_shoal_reports_its_measurements_and_a_verdict() {
    let cluster = start(Flavor::Shoal, 1, ClusterOptions::default());
    let mut command = Command::new(common::ETCDCTL);
    command
        .env("ETCDCTL_API", "3")
        .env_remove("ETCDCTL_ENDPOINTS")
        .arg(format!("--endpoints={}", cluster.endpoint(0)))
        .args(["check", "perf", "--load=s"]);
    let output = common::run_with_watchdog(command, None, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let described = common::describe_output(&output);
    // etcdctl 3.4 prints a slow request's failure without the `FAIL:` the
    // other two failures have.
    const SLOWEST_FAILED: &str = "Slowest request took too long: ";
    // The progress bar redraws itself with carriage returns.
    let lines: Vec<&str> = stdout
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|line| {
            line.starts_with("PASS") || line.starts_with("FAIL") || line.starts_with(SLOWEST_FAILED)
        })
        .collect();
    let measurement = |pass: &str, fail: &str| {
        let line = lines
            .iter()
            .find(|line| line.starts_with(pass) || line.starts_with(fail))
            .unwrap_or_else(|| panic!("no `{pass}` or `{fail}` line:\n{described}"));
        let number = line
            .trim_end_matches(" writes/s")
            .trim_end_matches('s')
            .rsplit(' ')
            .next()
            .and_then(|number| number.parse::<f64>().ok());
        assert!(
            number.is_some_and(|number| number >= 0.0),
            "no measurement in `{line}`:\n{described}"
        );
    };
    measurement("PASS: Throughput is ", "FAIL: Throughput too low: ");
    measurement("PASS: Slowest request took ", SLOWEST_FAILED);
    measurement("PASS: Stddev is ", "FAIL: Stddev too high: ");
    println!("{}", lines.join("\n"));
    let verdict = lines.last().copied().unwrap_or("");
    let any_failed = lines
        .iter()
        .any(|line| line.starts_with("FAIL:") || line.starts_with(SLOWEST_FAILED));
    match verdict {
        "PASS" => assert!(output.status.success() && !any_failed, "{described}"),
        "FAIL" => assert!(!output.status.success() && any_failed, "{described}"),
        _ => panic!("no final PASS or FAIL line:\n{described}"),
    }
    // It cleans up after itself.
    let left = cluster.etcdctl_ok_at(
        0,
        &["get", "/etcdctl-check-perf/", "--prefix", "--keys-only"],
    );
    assert!(
        left.trim().is_empty(),
        "check perf left keys behind: {left}"
    );
}

/// The normaliser's own rules, without a cluster.
#[test]
fn base64_round_trips() {
    for text in ["", "a", "ab", "abc", "mylock/694d7f3b2a9c0b04", "w/a"] {
        let encoded = base64_encode(text.as_bytes());
        assert_eq!(base64_decode(&encoded).as_deref(), Some(text.as_bytes()));
    }
    assert_eq!(base64_encode(b"end"), "ZW5k");
    assert_eq!(base64_encode(b"w/a"), "dy9h");
}

#[test]
fn remaining_ttls_are_hidden_only_when_plausible() {
    assert_eq!(
        normalise_remaining_ttl("lease 1 granted with TTL(200s), remaining(198s)").as_deref(),
        Some("lease 1 granted with TTL(200s), remaining(<remaining>s)")
    );
    assert_eq!(
        normalise_remaining_ttl("lease 1 granted with TTL(200s), remaining(20s)"),
        None
    );
    assert_eq!(
        normalise_remaining_ttl("lease 1 granted with TTL(200s), remaining(-1s)"),
        None
    );
}

#[test]
fn hashes_keep_whether_members_agree() {
    let rules = Rules::default();
    assert_eq!(
        finish_normalising("<client0>, 1\n<client1>, 1\n<client2>, 7\n", rules, true),
        "<client0>, <hash0>\n<client1>, <hash0>\n<client2>, <hash1>\n"
    );
    assert_eq!(
        finish_normalising("<client0>, 1\n", rules, false),
        "<client0>, 1\n",
        "only hashkv outputs hold hashes"
    );
}

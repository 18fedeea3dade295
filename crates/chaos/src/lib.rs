//! `shoal chaos`: real `shoal store` members on test hosts made of network
//! namespaces, a recorded concurrent workload, faults drawn from a seed, and
//! checkers over the recorded history. See `TESTING.md` at the repository root.

pub mod check;
pub mod client;
pub mod faults;
pub mod history;
pub mod hosts;
pub mod summary;
pub mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::maintenance_client::MaintenanceClient;
use proto::etcdserverpb::{HashKvRequest, PutRequest, RangeRequest};

use crate::check::CheckOptions;
use crate::faults::{FaultKind, Injector, lock};
use crate::history::{End, Event, EventKind, History, Recorder};
use crate::hosts::{Hosts, Timing};
use crate::workload::{PREFIX, PREFIX_END, WorkloadShape};

/// Run the store under faults on network-namespace test hosts and check the
/// recorded history (needs root).
#[derive(clap::Args, Debug, Clone)]
pub struct ChaosArgs {
    /// How long the workload and the faults run: 30s, 10m, 1h (a plain number
    /// is seconds).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Seed of every random choice (faults, targets, workload); random if unset.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Fault kinds to draw from, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "kill,pause,partition,asymmetric,leader,loss,membership,disk"
    )]
    pub faults: Vec<FaultKind>,
    /// Number of store members (one network namespace each).
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// The shoal binary the members run [default: the shoal beside this program,
    /// or the workspace's target/debug/shoal].
    #[arg(long)]
    pub shoal: Option<PathBuf>,
    /// Where the history, the summary and the members' logs and data are kept
    /// [default: a new directory under /tmp].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Number of single-key register clients.
    #[arg(long, default_value_t = 4)]
    pub register_clients: usize,
    /// Check a saved history (history.jsonl) instead of running.
    #[arg(long, value_name = "HISTORY")]
    pub check: Option<PathBuf>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit_seconds) = match text.char_indices().last() {
        Some((index, 's')) => (&text[..index], 1),
        Some((index, 'm')) => (&text[..index], 60),
        Some((index, 'h')) => (&text[..index], 3600),
        _ => (text, 1),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (examples: 30s, 10m, 1h)"))?;
    Ok(Duration::from_secs(number * unit_seconds))
}

/// The outcome of a run, for the summary and for tests.
pub struct RunReport {
    pub seed: u64,
    pub history_path: PathBuf,
    pub results: Vec<check::CheckResult>,
    pub text: String,
}

impl RunReport {
    pub fn n_violations(&self) -> usize {
        self.results
            .iter()
            .filter(|result| result.is_violation())
            .count()
    }
}

/// `shoal chaos`: runs (or re-checks) and prints the summary; exit status 1 on
/// any violation.
pub fn run(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.check {
        let history = History::load(path)?;
        let results = check::check_all(&history, CheckOptions::default());
        let text = summary::render(&summary::Summary {
            seed: None,
            duration: None,
            history: &history,
            faults: &[],
            observations: &[],
            results: &results,
            history_path: path,
            dir: None,
        });
        println!("{text}");
        let violated = results.iter().any(check::CheckResult::is_violation);
        return Ok(if violated {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    let report = run_chaos(args)?;
    println!("{}", report.text);
    Ok(if report.n_violations() > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn default_shoal() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    if exe.file_name().is_some_and(|name| name == "shoal") {
        return Ok(exe);
    }
    // A test binary (target/debug/deps/<test>) sits one level
    // below target/debug/shoal.
    let candidates = [
        exe.parent()
            .and_then(|dir| dir.parent())
            .map(|dir| dir.join("shoal")),
        exe.parent().map(|dir| dir.join("shoal")),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/shoal")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|path| path.is_file())
        .context("no shoal binary found: build it (cargo build -p shoal) or pass --shoal PATH")
}

/// Sets up the hosts, runs the workload and the faults, tears down, checks.
pub fn run_chaos(args: ChaosArgs) -> anyhow::Result<RunReport> {
    if !hosts::is_root() {
        bail!("shoal chaos needs root: it makes network namespaces, veths and iptables rules");
    }
    let seed = args.seed.unwrap_or_else(|| rand::random::<u32>().into());
    let shoal = match &args.shoal {
        Some(path) => path.clone(),
        None => default_shoal()?,
    };
    let shoal = std::fs::canonicalize(&shoal)
        .with_context(|| format!("shoal binary {} not found", shoal.display()))?;
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("shoal-chaos-{seed}-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = std::fs::canonicalize(&dir)?;
    let small_disk_member = args.faults.contains(&FaultKind::Disk).then_some(0);
    let timing = Timing {
        heartbeat_interval_ms: 100,
        election_timeout_ms: 1000,
    };
    let hosts = Hosts::create(&shoal, &dir, args.members, timing, small_disk_member)?;
    let hosts = Arc::new(Mutex::new(hosts));
    lock(&hosts).start_all()?;
    lock(&hosts).wait_until_listening(Duration::from_secs(30))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(drive(&args, seed, &hosts, &dir));
    // Teardown before checking: every process, namespace and mount goes.
    drop(runtime);
    drop(hosts);
    let (history, faults, observations) = result?;

    let history_path = dir.join("history.jsonl");
    history.save(&history_path)?;
    let results = check::check_all(&history, CheckOptions::default());
    let text = summary::render(&summary::Summary {
        seed: Some(seed),
        duration: Some(args.duration),
        history: &history,
        faults: &faults,
        observations: &observations,
        results: &results,
        history_path: &history_path,
        dir: Some(&dir),
    });
    std::fs::write(dir.join("summary.txt"), format!("{text}\n"))?;
    Ok(RunReport {
        seed,
        history_path,
        results,
        text,
    })
}

type Driven = (History, Vec<faults::FaultRecord>, Vec<faults::Observation>);

async fn drive(
    args: &ChaosArgs,
    seed: u64,
    hosts: &Arc<Mutex<Hosts>>,
    dir: &std::path::Path,
) -> anyhow::Result<Driven> {
    let urls = Arc::new(lock(hosts).client_urls());
    wait_for_write(&urls, Duration::from_secs(30))
        .await
        .with_context(|| {
            format!(
                "the cluster never accepted a write; logs in {}",
                dir.display()
            )
        })?;

    let cancelled = Arc::new(AtomicBool::new(false));
    let cancel_on_interrupt = {
        let cancelled = cancelled.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: healing and tearing down");
                cancelled.store(true, Ordering::Relaxed);
            }
        })
    };
    let recorder = Recorder::new(Instant::now());
    let deadline = Instant::now() + args.duration;
    let context = workload::Context {
        urls: urls.clone(),
        recorder: recorder.clone(),
        deadline,
        cancelled: cancelled.clone(),
        seed,
    };
    let shape = WorkloadShape {
        n_register_clients: args.register_clients,
        n_cas_clients: 2,
        n_lock_clients: 2,
        n_lease_clients: 2,
        n_watchers: 2,
    };
    let mut injector = Injector {
        hosts: hosts.clone(),
        kinds: args.faults.clone(),
        seed,
        recorder: recorder.clone(),
        deadline,
        cancelled: cancelled.clone(),
        faults: Vec::new(),
        observations: Vec::new(),
    };
    let workload = tokio::spawn(workload::run(context, shape));
    injector.run().await;
    // Clients stop at the deadline; each operation is bounded, so this is too.
    let _ = workload.await;
    cancel_on_interrupt.abort();

    // After healing: every member up, then the end state.
    injector.restart_exited();
    let listening = {
        let hosts = hosts.clone();
        tokio::task::spawn_blocking(move || {
            lock(&hosts).wait_until_listening(Duration::from_secs(30))
        })
        .await?
    };
    if let Err(error) = listening {
        injector.observations.push(faults::Observation {
            at_seconds: recorder.started().elapsed().as_secs_f64(),
            text: format!("after healing: {error:#}"),
        });
    }
    let end = read_end_state(&urls).await;
    injector.restart_exited();
    let history = History {
        records: recorder.take(),
        end,
    };
    Ok((history, injector.faults, injector.observations))
}

/// Puts a marker until one member accepts it; returns its revision.
async fn wait_for_write(urls: &[String], timeout: Duration) -> anyhow::Result<i64> {
    let deadline = Instant::now() + timeout;
    let mut attempt = 0;
    loop {
        let url = &urls[attempt % urls.len()];
        attempt += 1;
        let mut kv = KvClient::new(client::channel(url)?);
        let put = client::bounded(
            client::REQUEST_TIMEOUT,
            kv.put(PutRequest {
                key: format!("{PREFIX}end").into(),
                value: format!("marker {attempt}").into(),
                ..Default::default()
            }),
        )
        .await;
        match put {
            Ok(response) => return Ok(response.header.map_or(0, |header| header.revision)),
            Err(status) if Instant::now() > deadline => {
                bail!("no member accepted a write within {timeout:?}: {status}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// The final marker's revision, the final state, the reference history and
/// every member's `HashKV`. Best effort: what cannot be read stays empty and
/// the checkers that need it say "unknown".
async fn read_end_state(urls: &[String]) -> End {
    let mut end = End::default();
    let Ok(final_revision) = wait_for_write(urls, Duration::from_secs(60)).await else {
        return end;
    };
    end.final_revision = final_revision;
    // Linearizable read of the final state, from any member.
    for url in urls.iter().cycle().take(urls.len() * 5) {
        let Ok(channel) = client::channel(url) else {
            continue;
        };
        let range = client::bounded(
            client::REQUEST_TIMEOUT,
            KvClient::new(channel)
                .max_decoding_message_size(usize::MAX)
                .range(RangeRequest {
                    key: PREFIX.to_string().into(),
                    range_end: PREFIX_END.to_string().into(),
                    ..Default::default()
                }),
        )
        .await;
        if let Ok(range) = range {
            end.final_state = range
                .kvs
                .iter()
                .map(|kv| Event {
                    kind: EventKind::Put,
                    key: String::from_utf8_lossy(&kv.key).into_owned(),
                    value: String::from_utf8_lossy(&kv.value).into_owned(),
                    mod_revision: kv.mod_revision,
                    create_revision: kv.create_revision,
                })
                .collect();
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The reference history: one watch from revision 1 to the marker.
    for url in urls.iter().cycle().take(urls.len() * 3) {
        let mut events = Vec::new();
        let mut next_revision = 1;
        // Each pass is bounded by its idle timeout; a few passes resume.
        for _ in 0..5 {
            next_revision =
                workload::watch_prefix(url, next_revision, Duration::from_secs(5), |batch| {
                    events.extend(batch);
                    events
                        .last()
                        .is_some_and(|event: &Event| event.mod_revision < final_revision)
                })
                .await;
            if next_revision > final_revision {
                break;
            }
        }
        if events
            .last()
            .is_some_and(|event| event.mod_revision >= final_revision)
        {
            end.reference = events;
            break;
        }
    }
    // HashKV at the marker's revision on every member, once it has applied it.
    for (member_idx, url) in urls.iter().enumerate() {
        for _ in 0..20 {
            let Ok(channel) = client::channel(url) else {
                break;
            };
            let hash = client::bounded(
                client::REQUEST_TIMEOUT,
                MaintenanceClient::new(channel).hash_kv(HashKvRequest {
                    revision: final_revision,
                }),
            )
            .await;
            if let Ok(hash) = hash {
                end.member_hashes.push((member_idx, hash.hash));
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("fast").is_err());
    }
}

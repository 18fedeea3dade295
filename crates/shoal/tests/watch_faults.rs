//! Watch under faults, with real processes: 1,000 watchers on one member of a
//! three-member cluster (10 gRPC streams of 100 watchers: the whole key
//! space, prefixes, ranges and single keys), a writer on another member, and
//! in the middle a compaction and a SIGKILL of the leader (restarted later).
//! Every watcher must receive every event of its range exactly once, in
//! revision order, checked against the writer's acknowledged history; or,
//! where its position was compacted, a compacted cancel from which it resumes
//! at the compact revision. A watcher whose member is killed resumes on
//! another member from its last seen revision + 1.
//!
//! Each scenario has a twin that runs it on etcd, to validate the test itself.
//! `SHOAL_TEST_SEED` replays a run's choice of keys (the timing of faults
//! against writes is not deterministic).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{Cluster, ClusterOptions, Flavor};
use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::watch_client::WatchClient;
use proto::etcdserverpb::watch_request::RequestUnion;
use proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest, WatchCreateRequest,
    WatchRequest, WatchResponse,
};
use proto::mvccpb::event::EventType;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const N_STREAMS: usize = 10;
const WATCHERS_PER_STREAM: usize = 100;
const N_WATCHERS: usize = N_STREAMS * WATCHERS_PER_STREAM;
/// The key space: `wf/BB/II`, 50 buckets of 10 items.
const N_BUCKETS: u64 = 50;
const ITEMS_PER_BUCKET: u64 = 10;
/// Writes (puts, and one delete in ten) and how many are in flight at once.
const N_OPS: usize = 2000;
const N_WRITERS: usize = 4;
/// Bounds: on the writer, on the watchers catching up once the writer is
/// done, and on any one gRPC call.
const WRITE_PHASE_TIMEOUT: Duration = Duration::from_secs(35);
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(15);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const ELECTION_BOUND: Duration = Duration::from_secs(10);
/// A stream that cannot connect after this many attempts gives up (and the
/// test fails with what its watchers missed).
const MAX_CONNECT_ATTEMPTS: usize = 100;

/// The clusters of one test binary run one at a time (see `.config/nextest.toml`
/// for nextest; this is for plain `cargo test`).
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Which member the fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// The leader is the third member: neither the watchers' nor the
    /// writer's. The watch streams must survive the leader change.
    LeaderIsAnotherMember,
    /// The watchers' member is the leader, killed under them: every stream
    /// reconnects to another member and resumes every watcher from its last
    /// seen revision + 1 (or from the compact revision, if that position was
    /// compacted).
    LeaderIsTheWatchersMember,
}

#[test]
fn shoal_watchers_on_a_follower_see_every_event_once_through_a_leader_kill_and_a_compaction() {
    run(Flavor::Shoal, Scenario::LeaderIsAnotherMember);
}

#[test]
fn shoal_watchers_resume_on_another_member_when_theirs_is_the_killed_leader() {
    run(Flavor::Shoal, Scenario::LeaderIsTheWatchersMember);
}

#[test]
fn etcd_watchers_on_a_follower_see_every_event_once_through_a_leader_kill_and_a_compaction() {
    run(Flavor::Etcd, Scenario::LeaderIsAnotherMember);
}

#[test]
fn etcd_watchers_resume_on_another_member_when_theirs_is_the_killed_leader() {
    run(Flavor::Etcd, Scenario::LeaderIsTheWatchersMember);
}

fn run(flavor: Flavor, scenario: Scenario) {
    let _one_at_a_time = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let seed = std::env::var("SHOAL_TEST_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |since| since.as_nanos() as u64)
        });
    println!("{flavor:?} {scenario:?}: SHOAL_TEST_SEED={seed}");
    let started = Instant::now();

    let mut cluster = Cluster::start(flavor, 3, ClusterOptions::default());
    let leader = cluster.wait_for_leader(ELECTION_BOUND);
    let (watch_member, writer_member, other_member) = match scenario {
        Scenario::LeaderIsAnotherMember => ((leader + 1) % 3, (leader + 2) % 3, leader),
        Scenario::LeaderIsTheWatchersMember => (leader, (leader + 1) % 3, (leader + 2) % 3),
    };
    // After the kill, streams try the next member in this order.
    let watch_endpoints = vec![
        cluster.endpoint(watch_member),
        cluster.endpoint(other_member),
    ];
    let writer_endpoint = cluster.endpoint(writer_member);
    let (compact_after_ops, kill_after_ops) = match scenario {
        Scenario::LeaderIsAnotherMember => (600, 1000),
        Scenario::LeaderIsTheWatchersMember => (500, 800),
    };

    let runtime = common::tokio_runtime();
    let start_revision = runtime.block_on(current_revision(&writer_endpoint)) + 1;
    let specs = watcher_specs();
    let logs: Arc<Mutex<Vec<WatcherLog>>> = Arc::new(Mutex::new(
        (0..N_WATCHERS)
            .map(|_| WatcherLog {
                next_revision: start_revision,
                ..WatcherLog::default()
            })
            .collect(),
    ));
    let (stop_sender, stop_receiver) = tokio::sync::watch::channel(false);
    let n_reconnects = Arc::new(AtomicUsize::new(0));
    let n_created = Arc::new(AtomicUsize::new(0));
    let streams: Vec<_> = (0..N_STREAMS)
        .map(|stream_idx| {
            let first = stream_idx * WATCHERS_PER_STREAM;
            runtime.spawn(run_stream(StreamContext {
                watchers: (first..first + WATCHERS_PER_STREAM)
                    .map(|watcher_idx| (watcher_idx, specs[watcher_idx].clone()))
                    .collect(),
                endpoints: watch_endpoints.clone(),
                logs: logs.clone(),
                stop: stop_receiver.clone(),
                n_reconnects: n_reconnects.clone(),
                n_created: n_created.clone(),
            }))
        })
        .collect();
    wait_until("every watcher is created", Duration::from_secs(20), || {
        n_created.load(Ordering::SeqCst) >= N_WATCHERS
    });

    let history = Arc::new(Mutex::new(WriterHistory::default()));
    let n_ops_done = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..N_WRITERS)
        .map(|writer_idx| {
            runtime.spawn(run_writer(
                writer_idx,
                seed,
                writer_endpoint.clone(),
                history.clone(),
                n_ops_done.clone(),
            ))
        })
        .collect();

    // The faults, at points of the write history.
    let write_deadline = Instant::now() + WRITE_PHASE_TIMEOUT;
    let ops_done = || n_ops_done.load(Ordering::SeqCst);
    wait_until_before(
        "the writer reaches the compaction point",
        write_deadline,
        || ops_done() >= compact_after_ops,
    );
    let compact_revision = history.lock().expect("history").max_acknowledged_revision();
    runtime
        .block_on(compact(&writer_endpoint, compact_revision))
        .unwrap_or_else(|error| panic!("{flavor:?}: compaction at {compact_revision}: {error}"));
    println!(
        "compacted at revision {compact_revision} after {:?}",
        started.elapsed()
    );
    wait_until_before("the writer reaches the kill point", write_deadline, || {
        ops_done() >= kill_after_ops
    });
    cluster.kill(leader);
    let killed_at = Instant::now();
    let new_leader = cluster.wait_for_leader(ELECTION_BOUND);
    println!(
        "killed leader member {leader} after {:?}; member {new_leader} leads after {:?}",
        killed_at - started,
        killed_at.elapsed()
    );
    thread::sleep(Duration::from_secs(1));
    cluster.restart(leader);

    // Writers stop at the write deadline; one may still wait for an answer.
    wait_until_before(
        "the writer finishes",
        write_deadline + CALL_TIMEOUT + Duration::from_secs(1),
        || writers.iter().all(|writer| writer.is_finished()),
    );
    let writes_done_at = Instant::now();
    let history = std::mem::take(&mut *history.lock().expect("history"));
    let final_revision = runtime.block_on(current_revision(&writer_endpoint));
    println!(
        "{} writes acknowledged, {} of unknown outcome, final revision {final_revision}, after {:?}",
        history.acknowledged.len(),
        history.uncertain.len(),
        started.elapsed()
    );

    // Wait (bounded) until every watcher has what the acknowledged history
    // says it should, then a little longer for anything delivered twice.
    let expected_last: Vec<i64> = specs
        .iter()
        .map(|spec| {
            history
                .acknowledged
                .values()
                .filter(|event| spec.covers(&event.key))
                .map(|event| event.revision)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let caught_up = wait_until_or_timeout(CATCH_UP_TIMEOUT, || {
        let logs = logs.lock().expect("logs");
        logs.iter()
            .zip(&expected_last)
            .all(|(log, &last)| log.next_revision > last)
    });
    thread::sleep(Duration::from_millis(500));
    println!(
        "watchers caught up: {caught_up}, {:?} after the last write",
        writes_done_at.elapsed()
    );
    let _ = stop_sender.send(true);
    runtime.block_on(async {
        for stream in streams {
            let _ = tokio::time::timeout(CALL_TIMEOUT, stream).await;
        }
    });
    drop(runtime);

    let logs = std::mem::take(&mut *logs.lock().expect("logs"));
    let report = check(
        &specs,
        &logs,
        &history,
        start_revision,
        final_revision,
        compact_revision,
    );
    let n_resumed_after_compaction = logs.iter().filter(|log| !log.gaps.is_empty()).count();
    let n_reconnects = n_reconnects.load(Ordering::SeqCst);
    println!(
        "{flavor:?} {scenario:?}: {} events delivered, {n_resumed_after_compaction} watchers resumed after a compacted cancel, {n_reconnects} stream reconnects, {} revisions unverifiable, in {:?}",
        logs.iter().map(|log| log.events.len()).sum::<usize>(),
        report.n_unverifiable,
        started.elapsed()
    );
    assert!(
        report.violations.is_empty(),
        "{flavor:?} {scenario:?} (SHOAL_TEST_SEED={seed}): {} watch guarantee violations, the first ones:\n{}",
        report.violations.len(),
        report
            .violations
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    match scenario {
        Scenario::LeaderIsAnotherMember => assert_eq!(
            n_reconnects, 0,
            "{flavor:?}: watch streams on a follower broke when another member (the leader) was killed"
        ),
        Scenario::LeaderIsTheWatchersMember => {
            assert!(
                n_reconnects >= N_STREAMS,
                "{flavor:?}: only {n_reconnects} streams reconnected after their member was killed"
            );
            // The scenario compacts before the kill, so sparse watchers
            // (single keys, whose last event is older than the compaction)
            // must take the compacted path.
            assert!(
                n_resumed_after_compaction > 0,
                "{flavor:?}: no watcher resumed after a compacted cancel: the scenario did not test it"
            );
        }
    }
    assert!(
        caught_up,
        "{flavor:?}: watchers had not caught up, yet no violation was found"
    );
}

/// What one watcher watches.
#[derive(Clone, Debug)]
struct WatcherSpec {
    key: Vec<u8>,
    /// Empty for a single key.
    range_end: Vec<u8>,
}

impl WatcherSpec {
    fn covers(&self, key: &[u8]) -> bool {
        if self.range_end.is_empty() {
            key == self.key.as_slice()
        } else {
            key >= self.key.as_slice() && key < self.range_end.as_slice()
        }
    }

    fn is_whole_key_space(&self) -> bool {
        self.key == b"wf/"
    }
}

/// 50 watchers of the whole key space, then in turn bucket prefixes, single
/// keys and ranges of a bucket.
fn watcher_specs() -> Vec<WatcherSpec> {
    (0..N_WATCHERS as u64)
        .map(|watcher_idx| {
            let bucket = watcher_idx % N_BUCKETS;
            if watcher_idx % 20 == 0 {
                WatcherSpec {
                    key: b"wf/".to_vec(),
                    range_end: b"wf0".to_vec(),
                }
            } else {
                match watcher_idx % 4 {
                    0 | 1 => WatcherSpec {
                        key: format!("wf/{bucket:02}/").into_bytes(),
                        range_end: format!("wf/{bucket:02}0").into_bytes(),
                    },
                    2 => WatcherSpec {
                        key: key_name(bucket, (watcher_idx / N_BUCKETS) % ITEMS_PER_BUCKET)
                            .into_bytes(),
                        range_end: Vec::new(),
                    },
                    _ => WatcherSpec {
                        key: key_name(bucket, 3).into_bytes(),
                        range_end: key_name(bucket, 7).into_bytes(),
                    },
                }
            }
        })
        .collect()
}

fn key_name(bucket: u64, item: u64) -> String {
    format!("wf/{bucket:02}/{item:02}")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Put,
    Delete,
}

/// One event: what a watcher received, or what an acknowledged write says
/// happened (then `create_revision` and `version` are unknown, 0).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Event {
    revision: i64,
    key: Vec<u8>,
    kind: Kind,
    value: Vec<u8>,
    create_revision: i64,
    version: i64,
}

impl std::fmt::Display for Event {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{} {:?} {}={}",
            self.revision,
            self.kind,
            String::from_utf8_lossy(&self.key),
            String::from_utf8_lossy(&self.value),
        )?;
        if self.create_revision != 0 {
            write!(
                formatter,
                " (create {}, version {})",
                self.create_revision, self.version
            )?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct WatcherLog {
    events: Vec<Event>,
    /// The first revision the watcher still needs.
    next_revision: i64,
    /// (last revision seen, compact revision) of each compacted cancel.
    gaps: Vec<(i64, i64)>,
    /// Problems seen as responses arrived (wrong order, unexpected cancel).
    violations: Vec<String>,
}

impl WatcherLog {
    fn in_gap(&self, revision: i64) -> bool {
        self.gaps.iter().any(|&(last_seen, compact_revision)| {
            revision > last_seen && revision < compact_revision
        })
    }
}

struct StreamContext {
    /// (global watcher index, what it watches).
    watchers: Vec<(usize, WatcherSpec)>,
    /// The watchers' member first; the next one after a stream breaks.
    endpoints: Vec<String>,
    logs: Arc<Mutex<Vec<WatcherLog>>>,
    stop: tokio::sync::watch::Receiver<bool>,
    n_reconnects: Arc<AtomicUsize>,
    n_created: Arc<AtomicUsize>,
}

/// One gRPC watch stream carrying 100 watchers, as an etcd client does:
/// each watcher resumes from its next revision after a reconnect, and from
/// the compact revision after a compacted cancel. Watch ids are chosen by
/// the client and never reused on a stream.
async fn run_stream(mut context: StreamContext) {
    let mut endpoint_idx = 0;
    let mut next_watch_id = 1i64;
    for attempt in 0..MAX_CONNECT_ATTEMPTS {
        if *context.stop.borrow() {
            return;
        }
        if attempt > 0 {
            endpoint_idx += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let endpoint = context.endpoints[endpoint_idx % context.endpoints.len()].clone();
        let Ok(Ok(mut client)) =
            tokio::time::timeout(CALL_TIMEOUT, WatchClient::connect(endpoint)).await
        else {
            continue;
        };
        let (requests, request_stream) = mpsc::channel::<WatchRequest>(2 * WATCHERS_PER_STREAM);
        // Watch id on this connection → index into `context.watchers`.
        let mut watch_ids: HashMap<i64, usize> = HashMap::new();
        {
            let logs = context.logs.lock().expect("logs");
            for (local_idx, (watcher_idx, spec)) in context.watchers.iter().enumerate() {
                let request = create_request(spec, logs[*watcher_idx].next_revision, next_watch_id);
                watch_ids.insert(next_watch_id, local_idx);
                next_watch_id += 1;
                requests
                    .try_send(request)
                    .expect("room for every create request");
            }
        }
        let Ok(Ok(response)) = tokio::time::timeout(
            CALL_TIMEOUT,
            client.watch(ReceiverStream::new(request_stream)),
        )
        .await
        else {
            continue;
        };
        let mut responses = response.into_inner();
        let mut n_created_here = 0;
        loop {
            tokio::select! {
                _ = context.stop.changed() => return,
                message = responses.message() => match message {
                    Ok(Some(response)) => {
                        if response.created {
                            n_created_here += 1;
                            if attempt == 0 && n_created_here <= WATCHERS_PER_STREAM {
                                context.n_created.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        let old_watch_id = response.watch_id;
                        if let Some((local_idx, resume_revision)) = handle_response(&context, &watch_ids, response) {
                            // Resume with a new id; the compacted one is done.
                            watch_ids.remove(&old_watch_id);
                            watch_ids.insert(next_watch_id, local_idx);
                            let request = create_request(&context.watchers[local_idx].1, resume_revision, next_watch_id);
                            next_watch_id += 1;
                            if requests.send(request).await.is_err() {
                                break;
                            }
                        }
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        if *context.stop.borrow() {
            return;
        }
        context.n_reconnects.fetch_add(1, Ordering::SeqCst);
    }
    let logs = &mut context.logs.lock().expect("logs");
    for (watcher_idx, _) in &context.watchers {
        logs[*watcher_idx].violations.push(format!(
            "its stream could not connect after {MAX_CONNECT_ATTEMPTS} attempts"
        ));
    }
}

fn create_request(spec: &WatcherSpec, start_revision: i64, watch_id: i64) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: spec.key.clone().into(),
            range_end: spec.range_end.clone().into(),
            start_revision,
            watch_id,
            ..Default::default()
        })),
    }
}

/// Records one response in its watcher's log; after a compacted cancel,
/// returns the watcher (its index in the stream) and the revision to resume
/// it from.
fn handle_response(
    context: &StreamContext,
    watch_ids: &HashMap<i64, usize>,
    response: WatchResponse,
) -> Option<(usize, i64)> {
    let Some(&local_idx) = watch_ids.get(&response.watch_id) else {
        // Progress notifications (watch id -1) and the like.
        return None;
    };
    let (watcher_idx, spec) = &context.watchers[local_idx];
    let mut logs = context.logs.lock().expect("logs");
    let log = &mut logs[*watcher_idx];
    if response.fragment {
        log.violations
            .push("a fragmented response, though fragment was not asked for".to_string());
    }
    for event in &response.events {
        let Some(kv) = &event.kv else {
            log.violations.push("an event without kv".to_string());
            continue;
        };
        let received = Event {
            revision: kv.mod_revision,
            key: kv.key.to_vec(),
            kind: if event.r#type == EventType::Delete as i32 {
                Kind::Delete
            } else {
                Kind::Put
            },
            value: kv.value.to_vec(),
            create_revision: kv.create_revision,
            version: kv.version,
        };
        if received.revision < log.next_revision {
            log.violations.push(format!(
                "event {received} arrived while the watcher expected revision {} or later (duplicate or out of order)",
                log.next_revision
            ));
        }
        if !spec.covers(&received.key) {
            log.violations
                .push(format!("event {received} is outside the watched range"));
        }
        log.next_revision = log.next_revision.max(received.revision + 1);
        log.events.push(received);
    }
    if response.compact_revision != 0 {
        if !response.canceled {
            log.violations.push(format!(
                "a response with compact revision {} did not cancel the watcher",
                response.compact_revision
            ));
        }
        let last_seen = log.next_revision - 1;
        log.gaps.push((last_seen, response.compact_revision));
        log.next_revision = response.compact_revision;
        return Some((local_idx, response.compact_revision));
    }
    if response.canceled {
        log.violations.push(format!(
            "canceled without a compact revision: {:?}",
            response.cancel_reason
        ));
    }
    None
}

/// What the writer did: events at the revisions its requests were
/// acknowledged at, and writes whose outcome it does not know (an error or
/// no answer: they may or may not have happened).
#[derive(Default)]
struct WriterHistory {
    acknowledged: BTreeMap<i64, Event>,
    uncertain: Vec<Event>,
}

impl WriterHistory {
    fn max_acknowledged_revision(&self) -> i64 {
        self.acknowledged.keys().next_back().copied().unwrap_or(0)
    }
}

/// splitmix64: one seed gives every writer the same operations, whatever
/// the interleaving of the writers.
fn mix(seed: u64, op_idx: u64) -> u64 {
    let mut z = seed
        .wrapping_add(op_idx.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Operation `op_idx`: a put of a unique value, or one time in ten a delete.
fn operation(seed: u64, op_idx: usize) -> (Kind, Vec<u8>, Vec<u8>) {
    let random = mix(seed, op_idx as u64);
    let key = key_name(random % N_BUCKETS, (random / N_BUCKETS) % ITEMS_PER_BUCKET);
    let kind = if (random >> 32).is_multiple_of(10) {
        Kind::Delete
    } else {
        Kind::Put
    };
    (kind, key.into_bytes(), format!("op-{op_idx}").into_bytes())
}

async fn run_writer(
    writer_idx: usize,
    seed: u64,
    endpoint: String,
    history: Arc<Mutex<WriterHistory>>,
    n_ops_done: Arc<AtomicUsize>,
) {
    let deadline = tokio::time::Instant::now() + WRITE_PHASE_TIMEOUT;
    let mut client = None;
    for op_idx in (writer_idx..N_OPS).step_by(N_WRITERS) {
        if tokio::time::Instant::now() >= deadline {
            return;
        }
        let (kind, key, value) = operation(seed, op_idx);
        if client.is_none() {
            client = tokio::time::timeout(CALL_TIMEOUT, KvClient::connect(endpoint.clone()))
                .await
                .ok()
                .and_then(Result::ok);
        }
        let outcome: Option<Option<i64>> = match client.as_mut() {
            None => None,
            Some(client) => match kind {
                Kind::Put => tokio::time::timeout(
                    CALL_TIMEOUT,
                    client.put(PutRequest {
                        key: key.clone().into(),
                        value: value.clone().into(),
                        ..Default::default()
                    }),
                )
                .await
                .ok()
                .and_then(Result::ok)
                .map(|response| {
                    Some(
                        response
                            .into_inner()
                            .header
                            .map_or(0, |header| header.revision),
                    )
                }),
                Kind::Delete => tokio::time::timeout(
                    CALL_TIMEOUT,
                    client.delete_range(DeleteRangeRequest {
                        key: key.clone().into(),
                        ..Default::default()
                    }),
                )
                .await
                .ok()
                .and_then(Result::ok)
                .map(|response| {
                    let response = response.into_inner();
                    // Deleting a missing key makes no revision and no event.
                    (response.deleted > 0)
                        .then(|| response.header.map_or(0, |header| header.revision))
                }),
            },
        };
        let event = Event {
            revision: 0,
            key,
            kind,
            value: if kind == Kind::Put { value } else { Vec::new() },
            create_revision: 0,
            version: 0,
        };
        {
            let mut history = history.lock().expect("history");
            match outcome {
                Some(Some(revision)) => {
                    let previous = history
                        .acknowledged
                        .insert(revision, Event { revision, ..event });
                    assert!(
                        previous.is_none(),
                        "two writes were acknowledged at revision {revision}"
                    );
                }
                Some(None) => {}
                None => history.uncertain.push(event),
            }
        }
        n_ops_done.fetch_add(1, Ordering::SeqCst);
        if outcome.is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The watch guarantees, checked against the writer's history.
struct Report {
    violations: Vec<String>,
    /// Revisions no acknowledged write and no watcher accounts for: only
    /// allowed where every whole-key-space watcher skipped them as compacted.
    n_unverifiable: usize,
}

fn check(
    specs: &[WatcherSpec],
    logs: &[WatcherLog],
    writer: &WriterHistory,
    start_revision: i64,
    final_revision: i64,
    compact_revision: i64,
) -> Report {
    let mut violations = Vec::new();
    for (watcher_idx, log) in logs.iter().enumerate() {
        for violation in &log.violations {
            violations.push(format!("watcher {watcher_idx}: {violation}"));
        }
        // Compacted cancels: only for our compaction, and only when the
        // watcher's position was below it.
        for &(last_seen, compacted_at) in &log.gaps {
            if compacted_at != compact_revision || last_seen + 1 >= compacted_at {
                violations.push(format!(
                    "watcher {watcher_idx}: compacted cancel at compact revision {compacted_at} while it needed revision {} (the cluster compacted at {compact_revision})",
                    last_seen + 1
                ));
            }
        }
    }

    // The history: acknowledged writes, completed by what watchers saw of
    // writes of unknown outcome. Watchers must agree with it and with each
    // other, and each put (a unique value) happens at one revision only.
    let mut history: BTreeMap<i64, Event> = writer.acknowledged.clone();
    let mut uncertain_puts: HashMap<Vec<u8>, &Event> = writer
        .uncertain
        .iter()
        .filter(|event| event.kind == Kind::Put)
        .map(|event| (event.value.clone(), event))
        .collect();
    let mut uncertain_deletes: HashMap<Vec<u8>, usize> = HashMap::new();
    for event in writer
        .uncertain
        .iter()
        .filter(|event| event.kind == Kind::Delete)
    {
        *uncertain_deletes.entry(event.key.clone()).or_default() += 1;
    }
    let mut revision_of_value: HashMap<Vec<u8>, i64> = writer
        .acknowledged
        .values()
        .filter(|event| event.kind == Kind::Put)
        .map(|event| (event.value.clone(), event.revision))
        .collect();
    let mut full_events: HashMap<i64, &Event> = HashMap::new();
    for (watcher_idx, log) in logs.iter().enumerate() {
        for event in &log.events {
            if let Some(&seen) = full_events.get(&event.revision) {
                if seen != event {
                    violations.push(format!(
                        "watcher {watcher_idx} received {event}, another watcher {seen}"
                    ));
                }
                continue;
            }
            full_events.insert(event.revision, event);
            match history.get(&event.revision) {
                Some(known) => {
                    if (known.key.as_slice(), known.kind, known.value.as_slice())
                        != (event.key.as_slice(), event.kind, event.value.as_slice())
                    {
                        violations.push(format!(
                            "watcher {watcher_idx} received {event}; the writer's acknowledged write at that revision is {known}"
                        ));
                    }
                }
                None => {
                    let explained = match event.kind {
                        Kind::Put => uncertain_puts
                            .remove(&event.value)
                            .is_some_and(|write| write.key == event.key),
                        Kind::Delete => match uncertain_deletes.get_mut(&event.key) {
                            Some(count) if *count > 0 => {
                                *count -= 1;
                                true
                            }
                            _ => false,
                        },
                    };
                    if !explained {
                        violations.push(format!(
                            "watcher {watcher_idx} received {event}, which no write of the writer explains"
                        ));
                    }
                    history.insert(event.revision, event.clone());
                }
            }
            if event.kind == Kind::Put {
                let revision = *revision_of_value
                    .entry(event.value.clone())
                    .or_insert(event.revision);
                if revision != event.revision {
                    violations.push(format!(
                        "the put of {} happened at revisions {revision} and {} (applied twice)",
                        String::from_utf8_lossy(&event.value),
                        event.revision
                    ));
                }
            }
        }
    }

    // Every revision is one write: a revision nobody accounts for must be
    // one every whole-key-space watcher skipped as compacted.
    let whole: Vec<&WatcherLog> = specs
        .iter()
        .zip(logs)
        .filter(|(spec, _)| spec.is_whole_key_space())
        .map(|(_, log)| log)
        .collect();
    let mut n_unverifiable = 0;
    for revision in start_revision..=final_revision {
        if !history.contains_key(&revision) {
            if whole.iter().all(|log| log.in_gap(revision)) {
                n_unverifiable += 1;
            } else {
                violations.push(format!(
                    "revision {revision}: no acknowledged write and no watcher event, though a whole-key-space watcher should have seen it"
                ));
            }
        }
    }
    if let Some((&revision, event)) = history.range(final_revision + 1..).next() {
        violations.push(format!(
            "an event {event} at revision {revision}, beyond the final revision {final_revision}"
        ));
    }

    // Each watcher: exactly the history's events of its range from its
    // start revision, in order, except inside its compacted gaps.
    for (watcher_idx, (spec, log)) in specs.iter().zip(logs).enumerate() {
        let expected: Vec<&Event> = history
            .values()
            .filter(|event| {
                event.revision >= start_revision
                    && spec.covers(&event.key)
                    && !log.in_gap(event.revision)
            })
            .collect();
        let received: Vec<i64> = log.events.iter().map(|event| event.revision).collect();
        let expected_revisions: Vec<i64> = expected.iter().map(|event| event.revision).collect();
        if received != expected_revisions {
            let missing: Vec<String> = expected
                .iter()
                .filter(|event| !received.contains(&event.revision))
                .take(5)
                .map(|event| event.to_string())
                .collect();
            let unexpected: Vec<String> = log
                .events
                .iter()
                .filter(|event| !expected_revisions.contains(&event.revision))
                .take(5)
                .map(|event| event.to_string())
                .collect();
            let received_twice: Vec<i64> = received
                .windows(2)
                .filter(|pair| pair[0] >= pair[1])
                .map(|pair| pair[1])
                .take(5)
                .collect();
            violations.push(format!(
                "watcher {watcher_idx} ({}..{}, gaps {:?}): received {} events, expected {}; missing (first 5): {missing:?}; unexpected (first 5): {unexpected:?}; repeated or out of order (first 5): {received_twice:?}",
                String::from_utf8_lossy(&spec.key),
                String::from_utf8_lossy(&spec.range_end),
                log.gaps,
                received.len(),
                expected.len()
            ));
        }
    }
    Report {
        violations,
        n_unverifiable,
    }
}

async fn current_revision(endpoint: &str) -> i64 {
    let mut client = tokio::time::timeout(CALL_TIMEOUT, KvClient::connect(endpoint.to_string()))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("cannot connect to {endpoint}"));
    tokio::time::timeout(
        CALL_TIMEOUT,
        client.range(RangeRequest {
            key: b"wf/".to_vec().into(),
            count_only: true,
            ..Default::default()
        }),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or_else(|| panic!("a linearizable read through {endpoint} failed"))
    .into_inner()
    .header
    .map_or(0, |header| header.revision)
}

async fn compact(endpoint: &str, revision: i64) -> Result<(), String> {
    let mut client = tokio::time::timeout(CALL_TIMEOUT, KvClient::connect(endpoint.to_string()))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|error| error.to_string())?;
    tokio::time::timeout(
        CALL_TIMEOUT,
        client.compact(CompactionRequest {
            revision,
            physical: false,
        }),
    )
    .await
    .map_err(|_| "no answer".to_string())?
    .map_err(|status| status.to_string())?;
    Ok(())
}

fn wait_until(what: &str, timeout: Duration, condition: impl FnMut() -> bool) {
    wait_until_before(what, Instant::now() + timeout, condition);
}

fn wait_until_before(what: &str, deadline: Instant, mut condition: impl FnMut() -> bool) {
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Like [`wait_until`], but says whether the condition came true instead of
/// panicking.
fn wait_until_or_timeout(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

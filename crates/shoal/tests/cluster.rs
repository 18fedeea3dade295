//! Fault tolerance of a three-member shoal cluster, with real processes and
//! SIGKILL: leader failover, catch-up through a snapshot, and no
//! acknowledged write lost when every member is killed at once. Each
//! scenario has a twin that runs it on etcd, to validate the test itself.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Cluster, ClusterOptions, Flavor};

/// The bound on electing a new leader at etcd's default timing.
const MAX_ELECTION_TIME: Duration = Duration::from_secs(3);
/// How long a restarted member may take to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until `member_idx`'s serializable (local) read of every key equals
/// `expected` (a linearizable read through another member); panics with
/// the difference after [`CATCH_UP_TIMEOUT`].
fn wait_until_caught_up(cluster: &Cluster, member_idx: usize, expected: &str) {
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    loop {
        let output = cluster.etcdctl_at(member_idx, &["get", "", "--from-key", "--consistency=s"]);
        let actual = String::from_utf8_lossy(&output.stdout);
        if output.status.success() && actual == expected {
            return;
        }
        if Instant::now() >= deadline {
            let expected_pairs = common::parse_simple_get(expected);
            let actual_pairs: BTreeMap<_, _> = if output.status.success() {
                common::parse_simple_get(&actual).into_iter().collect()
            } else {
                BTreeMap::new()
            };
            let missing_or_wrong: Vec<_> = expected_pairs
                .iter()
                .filter(|(key, value)| actual_pairs.get(key) != Some(value))
                .take(10)
                .collect();
            panic!(
                "{:?} member {member_idx} has not caught up after {CATCH_UP_TIMEOUT:?}: it has {} keys, the cluster {}; first missing or different: {missing_or_wrong:?}\nlast read: {}",
                cluster.flavor,
                actual_pairs.len(),
                expected_pairs.len(),
                common::describe_output(&output)
                    .lines()
                    .take(5)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// SIGKILL the leader: another member must be elected within
/// [`MAX_ELECTION_TIME`], writes must go on through the survivors, and the
/// killed member must catch up once restarted.
fn leader_failover(flavor: Flavor) {
    let mut cluster = Cluster::start(flavor, 3, ClusterOptions::default());
    let old_leader_idx = cluster.wait_for_leader(common::STARTUP_TIMEOUT);
    let old_leader_id = cluster
        .status(old_leader_idx)
        .expect("the leader answers endpoint status")
        .member_id;
    for key_idx in 0..10 {
        cluster.etcdctl_ok_at(
            old_leader_idx,
            &["put", &format!("before/{key_idx:02}"), &key_idx.to_string()],
        );
    }
    let survivors: Vec<usize> = (0..3)
        .filter(|&member_idx| member_idx != old_leader_idx)
        .collect();

    cluster.kill(old_leader_idx);
    let killed_at = Instant::now();
    let new_leader_id = 'election: loop {
        for &member_idx in &survivors {
            if let Some(status) = cluster.status(member_idx)
                && status.leader != 0
                && status.leader != old_leader_id
            {
                break 'election status.leader;
            }
        }
        assert!(
            killed_at.elapsed() < 4 * MAX_ELECTION_TIME,
            "{flavor:?}: no new leader {:?} after SIGKILL of leader m{old_leader_idx}",
            killed_at.elapsed()
        );
        thread::sleep(Duration::from_millis(20));
    };
    let election_time = killed_at.elapsed();
    eprintln!(
        "{flavor:?}: new leader {new_leader_id:x} {election_time:?} after SIGKILL of leader m{old_leader_idx}"
    );
    assert!(
        election_time <= MAX_ELECTION_TIME,
        "{flavor:?}: electing a new leader after SIGKILL of leader m{old_leader_idx} took {election_time:?}, more than {MAX_ELECTION_TIME:?}"
    );
    let new_leader_is_survivor = survivors.iter().any(|&member_idx| {
        cluster
            .status(member_idx)
            .is_some_and(|status| status.member_id == new_leader_id)
    });
    assert!(
        new_leader_is_survivor,
        "{flavor:?}: the reported new leader {new_leader_id:x} is not a surviving member"
    );

    // Through the new leader and through the follower (which forwards).
    for key_idx in 0..20 {
        let member_idx = survivors[key_idx % survivors.len()];
        cluster.etcdctl_ok_at(
            member_idx,
            &["put", &format!("after/{key_idx:02}"), &key_idx.to_string()],
        );
    }
    let expected = cluster.etcdctl_ok_at(survivors[0], &["get", "", "--from-key"]);
    assert_eq!(
        common::parse_simple_get(&expected).len(),
        30,
        "{flavor:?}: the survivors should hold the 10 keys written before and the 20 after the failover"
    );

    cluster.restart(old_leader_idx);
    wait_until_caught_up(&cluster, old_leader_idx, &expected);
}

/// A member that misses more than `--snapshot-count` entries catches up
/// (through a snapshot, as the leader has compacted its log; the test only
/// checks the data).
fn snapshot_catch_up(flavor: Flavor) {
    const N_KEYS: usize = 1000;
    let options = ClusterOptions {
        snapshot_count: Some(100),
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::start(flavor, 3, options);
    // Any member will do: if it leads, the others elect a new leader before
    // the writes start.
    let lagging_idx = 2;
    let survivors = [0, 1];

    cluster.kill(lagging_idx);
    cluster.wait_until_healthy();
    let survivor_endpoints: Vec<String> = survivors
        .iter()
        .map(|&member_idx| cluster.endpoint(member_idx))
        .collect();
    common::put_many(&survivor_endpoints, "snap/", N_KEYS);
    let expected = cluster.etcdctl_ok_at(survivors[0], &["get", "", "--from-key"]);
    assert_eq!(
        common::parse_simple_get(&expected).len(),
        N_KEYS,
        "{flavor:?}: the survivors should hold every key written"
    );

    cluster.restart(lagging_idx);
    wait_until_caught_up(&cluster, lagging_idx, &expected);
}

/// Every member SIGKILLed at once in the middle of a write load, then
/// restarted: every acknowledged write must be there ("no acknowledged
/// write lost"). Writers overwrite a small set of keys with increasing
/// sequence numbers, so a key may hold its acknowledged value or a later
/// one (written, perhaps unacknowledged, before the crash), never an
/// earlier one.
fn no_acknowledged_write_lost_when_all_members_crash(flavor: Flavor) {
    const N_WRITERS: usize = 12;
    const KEYS_PER_WRITER: u64 = 50;
    const MAX_OPS_PER_WRITER: u64 = 250; // 3,000 in all
    const MAX_LOAD_TIME: Duration = Duration::from_secs(8);
    /// The crash comes after this long or this many acknowledged writes,
    /// whichever is first, while the writers are still busy.
    const CRASH_AFTER: Duration = Duration::from_secs(3);
    const CRASH_AFTER_ACKS: u64 = 2000;

    let mut cluster = Cluster::start(flavor, 3, ClusterOptions::default());
    let endpoints = cluster.endpoints();

    let runtime = common::tokio_runtime();
    let stop = Arc::new(AtomicBool::new(false));
    let n_acks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writers: Vec<_> = (0..N_WRITERS)
        .map(|writer_idx| {
            let endpoint = endpoints[writer_idx % endpoints.len()].clone();
            let stop = stop.clone();
            let n_acks = n_acks.clone();
            runtime.spawn(async move {
                let mut client =
                    proto::etcdserverpb::kv_client::KvClient::connect(endpoint.clone())
                        .await
                        .unwrap_or_else(|error| panic!("cannot connect to {endpoint}: {error}"));
                // Key to the last sequence number acknowledged for it.
                let mut acknowledged: BTreeMap<String, u64> = BTreeMap::new();
                let started = Instant::now();
                for sequence in 0..MAX_OPS_PER_WRITER {
                    if stop.load(Ordering::Relaxed) || started.elapsed() > MAX_LOAD_TIME {
                        break;
                    }
                    let key = format!("crash/w{writer_idx:02}/k{:03}", sequence % KEYS_PER_WRITER);
                    let request = proto::etcdserverpb::PutRequest {
                        key: key.clone().into_bytes().into(),
                        value: sequence.to_string().into_bytes().into(),
                        ..Default::default()
                    };
                    let reply =
                        tokio::time::timeout(common::GRPC_REQUEST_TIMEOUT, client.put(request))
                            .await;
                    match reply {
                        Ok(Ok(_)) => {
                            acknowledged.insert(key, sequence);
                            n_acks.fetch_add(1, Ordering::Relaxed);
                        }
                        // Not acknowledged: it may or may not have been
                        // applied. Back off; the members may be gone.
                        Ok(Err(_)) | Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
                acknowledged
            })
        })
        .collect();

    let load_started = Instant::now();
    while load_started.elapsed() < CRASH_AFTER && n_acks.load(Ordering::Relaxed) < CRASH_AFTER_ACKS
    {
        thread::sleep(Duration::from_millis(10));
    }
    let acks_before_crash = n_acks.load(Ordering::Relaxed);
    cluster.kill_all();
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged: BTreeMap<String, u64> = BTreeMap::new();
    for writer in writers {
        acknowledged.extend(runtime.block_on(writer).expect("a writer task panicked"));
    }
    let n_acks_total = n_acks.load(Ordering::Relaxed);
    assert!(
        acks_before_crash >= 100,
        "{flavor:?}: only {acks_before_crash} writes acknowledged before the crash; the load is too light to test anything"
    );

    eprintln!(
        "{flavor:?}: {acks_before_crash} writes acknowledged before SIGKILL of every member, {n_acks_total} in all, over {} keys",
        acknowledged.len()
    );
    for member_idx in 0..3 {
        cluster.restart(member_idx);
    }
    cluster.wait_until_healthy();
    let stored: BTreeMap<String, String> =
        common::parse_simple_get(&cluster.etcdctl_ok_at(0, &["get", "crash/", "--prefix"]))
            .into_iter()
            .collect();

    let lost: Vec<String> = acknowledged
        .iter()
        .filter_map(|(key, &acknowledged_sequence)| {
            let stored_sequence = stored.get(key).and_then(|value| value.parse::<u64>().ok());
            match stored_sequence {
                Some(stored_sequence) if stored_sequence >= acknowledged_sequence => None,
                _ => Some(format!(
                    "{key}: acknowledged {acknowledged_sequence}, stored {:?}",
                    stored.get(key)
                )),
            }
        })
        .collect();
    assert!(
        lost.is_empty(),
        "{flavor:?}: {} of {} acknowledged keys lost or rolled back after SIGKILL of every member ({n_acks_total} writes acknowledged):\n{}",
        lost.len(),
        acknowledged.len(),
        lost.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn shoal_elects_a_new_leader_after_leader_sigkill_and_the_member_catches_up() {
    leader_failover(Flavor::Shoal);
}

#[test]
fn shoal_member_catches_up_after_missing_more_than_snapshot_count_entries() {
    snapshot_catch_up(Flavor::Shoal);
}

#[test]
fn shoal_loses_no_acknowledged_write_when_every_member_is_sigkilled() {
    no_acknowledged_write_lost_when_all_members_crash(Flavor::Shoal);
}

#[test]
fn etcd_elects_a_new_leader_after_leader_sigkill_and_the_member_catches_up() {
    leader_failover(Flavor::Etcd);
}

#[test]
fn etcd_member_catches_up_after_missing_more_than_snapshot_count_entries() {
    snapshot_catch_up(Flavor::Etcd);
}

#[test]
fn etcd_loses_no_acknowledged_write_when_every_member_is_sigkilled() {
    no_acknowledged_write_lost_when_all_members_crash(Flavor::Etcd);
}

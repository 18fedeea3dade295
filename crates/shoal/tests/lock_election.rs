//! The v3lock and v3election gRPC services, driven directly with the `proto`
//! crate's gRPC clients: one scenario runs against real etcd (which proves the
//! scenario tests etcd's behaviour) and against shoal, each asserting the
//! behaviour, and shoal's transcript (keys, values, revisions, error codes and
//! texts) must equal etcd's.

mod common;

use std::future::Future;
use std::time::Duration;

use common::{Cluster, ClusterOptions, Flavor};
use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::lease_client::LeaseClient;
use proto::etcdserverpb::{
    LeaseGrantRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, RangeRequest, ResponseHeader,
};
use proto::v3electionpb::election_client::ElectionClient;
use proto::v3electionpb::{
    CampaignRequest, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest, ResignRequest,
};
use proto::v3lockpb::lock_client::LockClient;
use proto::v3lockpb::{LockRequest, UnlockRequest};

/// Every request and every wait for an event is bounded by this.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request that must block is watched before we conclude it blocks.
const STILL_BLOCKED_AFTER: Duration = Duration::from_millis(700);

/// Client-chosen lease ids, so that keys (`name/<lease hex>`) are the same on
/// etcd and shoal.
const LEASE_A: i64 = 0x0a0a;
const LEASE_B: i64 = 0x0b0b;
const LEASE_REVOKED: i64 = 0x0c0c;
const LEASE_HOLDER: i64 = 0x0d0d;
const LEASE_WAITER: i64 = 0x0e0e;

#[test]
fn etcd_passes_the_lock_and_election_scenario() {
    let transcript = run_scenario(Flavor::Etcd);
    println!("{}", transcript.join("\n"));
}

#[test]
fn shoal_passes_the_lock_and_election_scenario_as_etcd_does() {
    let shoal = run_scenario(Flavor::Shoal);
    let etcd = run_scenario(Flavor::Etcd);
    assert_eq!(
        shoal.join("\n"),
        etcd.join("\n"),
        "shoal's transcript (left) differs from etcd's (right)"
    );
}

/// The scenario through every member of a three-member cluster, followers
/// included: a follower forwards lease checks to the leader and watches its
/// own applied state.
#[test]
fn shoal_serves_locks_and_elections_from_every_member_as_etcd_does() {
    let shoal = run_scenario_on_every_member(Flavor::Shoal);
    let etcd = run_scenario_on_every_member(Flavor::Etcd);
    assert_eq!(
        shoal.join("\n"),
        etcd.join("\n"),
        "shoal's transcript (left) differs from etcd's (right)"
    );
}

/// etcd bug #11456: a waiter whose lease ends while it waits is granted the
/// lock anyway, with a key that no longer exists. This proves the scenario of
/// the next test reproduces the bug.
#[test]
fn etcd_3_4_grants_a_lock_whose_lease_ended_while_waiting() {
    let cluster = Cluster::start(Flavor::Etcd, 1, ClusterOptions::default());
    let runtime = common::tokio_runtime();
    let outcome = runtime.block_on(lock_after_lease_ends(cluster.endpoint(0)));
    assert_eq!(
        outcome.map(|key| text(&key)),
        Ok(format!("lk/{LEASE_WAITER:x}"))
    );
}

/// shoal re-checks the lease before it grants, so the waiter of etcd bug
/// #11456 gets etcd's error for a lease that does not exist.
#[test]
fn shoal_refuses_a_lock_whose_lease_ended_while_waiting() {
    let cluster = Cluster::start(Flavor::Shoal, 1, ClusterOptions::default());
    let runtime = common::tokio_runtime();
    let outcome = runtime.block_on(lock_after_lease_ends(cluster.endpoint(0)));
    match outcome {
        Ok(key) => panic!(
            "the lock was granted as {} although its lease was revoked",
            text(&key)
        ),
        Err(refusal) => assert_eq!(
            refusal,
            Refusal {
                code: "Unknown".to_string(),
                message: "etcdserver: requested lease not found".to_string(),
            }
        ),
    }
}

/// A gRPC error as the transcript records it: etcd clients match on both.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    code: String,
    message: String,
}

/// Turns a gRPC status into a [`Refusal`].
macro_rules! refusal {
    () => {
        |status| Refusal {
            code: format!("{:?}", status.code()),
            message: status.message().to_string(),
        }
    };
}

/// Fresh clients per call: loopback connections are cheap, and a test that
/// only names the generated clients needs no gRPC library of its own.
struct Clients {
    endpoint: String,
}

macro_rules! client {
    ($client:ident, $endpoint:expr) => {
        bounded("connect", $client::connect($endpoint.clone()))
            .await
            .unwrap_or_else(|error| panic!("cannot connect to {}: {error}", $endpoint))
    };
}

impl Clients {
    async fn grant(&self, id: i64, ttl: i64) {
        let mut lease = client!(LeaseClient, self.endpoint);
        bounded(
            "lease grant",
            lease.lease_grant(LeaseGrantRequest { ttl, id }),
        )
        .await
        .expect("lease grant");
    }

    async fn revoke(&self, id: i64) {
        let mut lease = client!(LeaseClient, self.endpoint);
        bounded(
            "lease revoke",
            lease.lease_revoke(LeaseRevokeRequest { id }),
        )
        .await
        .expect("lease revoke");
    }

    /// The lease's granted TTL and the number of its keys.
    async fn lease_ttl_and_keys(&self, id: i64) -> (i64, usize) {
        let mut lease = client!(LeaseClient, self.endpoint);
        let response = bounded(
            "time to live",
            lease.lease_time_to_live(LeaseTimeToLiveRequest { id, keys: true }),
        )
        .await
        .expect("time to live")
        .into_inner();
        (response.granted_ttl, response.keys.len())
    }

    async fn lock(&self, name: &str, lease: i64) -> Result<(Vec<u8>, i64), Refusal> {
        let mut lock = client!(LockClient, self.endpoint);
        let response = bounded(
            "lock",
            lock.lock(LockRequest {
                name: name.as_bytes().to_vec().into(),
                lease,
            }),
        )
        .await
        .map_err(refusal!())?
        .into_inner();
        Ok((response.key.to_vec(), header_revision(response.header)))
    }

    async fn unlock(&self, key: &[u8]) -> Result<i64, Refusal> {
        let mut lock = client!(LockClient, self.endpoint);
        let response = bounded(
            "unlock",
            lock.unlock(UnlockRequest {
                key: key.to_vec().into(),
            }),
        )
        .await
        .map_err(refusal!())?
        .into_inner();
        Ok(header_revision(response.header))
    }

    /// Every key under `prefix` with its create revision, oldest first.
    async fn keys_under(&self, prefix: &str) -> Vec<(String, i64)> {
        let mut kv = client!(KvClient, self.endpoint);
        let mut end = prefix.as_bytes().to_vec();
        *end.last_mut().expect("a non-empty prefix") += 1;
        let response = bounded(
            "range",
            kv.range(RangeRequest {
                key: prefix.as_bytes().to_vec().into(),
                range_end: end.into(),
                sort_order: 1,  // ascend
                sort_target: 2, // create revision
                ..Default::default()
            }),
        )
        .await
        .expect("range")
        .into_inner();
        response
            .kvs
            .iter()
            .map(|kv| (text(&kv.key), kv.create_revision))
            .collect()
    }

    async fn leader(&self, name: &str) -> Result<LeaderResponse, Refusal> {
        let mut election = client!(ElectionClient, self.endpoint);
        let response = bounded(
            "leader",
            election.leader(LeaderRequest {
                name: name.as_bytes().to_vec().into(),
            }),
        )
        .await
        .map_err(refusal!())?;
        Ok(response.into_inner())
    }

    async fn campaign(&self, name: &str, lease: i64, value: &str) -> Result<LeaderKey, Refusal> {
        let mut election = client!(ElectionClient, self.endpoint);
        let response = bounded(
            "campaign",
            election.campaign(CampaignRequest {
                name: name.as_bytes().to_vec().into(),
                lease,
                value: value.as_bytes().to_vec().into(),
            }),
        )
        .await
        .map_err(refusal!())?
        .into_inner();
        Ok(response
            .leader
            .expect("a campaign response names its leader"))
    }

    async fn proclaim(&self, leader: Option<LeaderKey>, value: &str) -> Result<i64, Refusal> {
        let mut election = client!(ElectionClient, self.endpoint);
        let response = bounded(
            "proclaim",
            election.proclaim(ProclaimRequest {
                leader,
                value: value.as_bytes().to_vec().into(),
            }),
        )
        .await
        .map_err(refusal!())?
        .into_inner();
        Ok(header_revision(response.header))
    }

    async fn resign(&self, leader: Option<LeaderKey>) -> Result<i64, Refusal> {
        let mut election = client!(ElectionClient, self.endpoint);
        let response = bounded("resign", election.resign(ResignRequest { leader }))
            .await
            .map_err(refusal!())?
            .into_inner();
        Ok(header_revision(response.header))
    }
}

/// Runs the scenario on a fresh one-member cluster; returns what it saw.
fn run_scenario(flavor: Flavor) -> Vec<String> {
    let cluster = Cluster::start(flavor, 1, ClusterOptions::default());
    let runtime = common::tokio_runtime();
    let mut transcript = Vec::new();
    runtime.block_on(async {
        let endpoint = cluster.endpoint(0);
        locks(&endpoint, &mut transcript).await;
        elections(&endpoint, &mut transcript).await;
    });
    transcript
}

/// Runs the scenario on a fresh three-member cluster, the lock part through
/// member 1 and the election part through member 2; the transcript records no
/// member ids, so which member leads makes no difference.
fn run_scenario_on_every_member(flavor: Flavor) -> Vec<String> {
    let cluster = Cluster::start(flavor, 3, ClusterOptions::default());
    let runtime = common::tokio_runtime();
    let mut transcript = Vec::new();
    runtime.block_on(async {
        locks(&cluster.endpoint(1), &mut transcript).await;
        elections(&cluster.endpoint(2), &mut transcript).await;
    });
    transcript
}

async fn locks(endpoint: &str, transcript: &mut Vec<String>) {
    let clients = Clients {
        endpoint: endpoint.to_string(),
    };
    clients.grant(LEASE_A, 60).await;
    clients.grant(LEASE_B, 60).await;

    // The first holder gets the lock at once; its key names its lease.
    let (key_a, revision_a) = clients.lock("lk", LEASE_A).await.expect("lock by A");
    assert_eq!(text(&key_a), format!("lk/{LEASE_A:x}"));
    transcript.push(format!("lock A: {} at {revision_a}", text(&key_a)));
    // Its create revision, the fencing token, is the revision of the grant.
    assert_eq!(
        clients.keys_under("lk/").await,
        vec![(text(&key_a), revision_a)]
    );

    // Locks are re-entrant for the same lease.
    let (again, revision) = clients.lock("lk", LEASE_A).await.expect("lock by A again");
    assert_eq!(again, key_a);
    transcript.push(format!("lock A again: {} at {revision}", text(&again)));

    // A second lease waits until the first holder unlocks.
    let waiter_clients = Clients {
        endpoint: endpoint.to_string(),
    };
    let mut waiter = tokio::spawn(async move { waiter_clients.lock("lk", LEASE_B).await });
    assert!(
        tokio::time::timeout(STILL_BLOCKED_AFTER, &mut waiter)
            .await
            .is_err(),
        "lock by B was granted while A held the lock"
    );
    let queued = clients.keys_under("lk/").await;
    transcript.push(format!("while B waits: {queued:?}"));
    assert_eq!(queued.len(), 2, "B queued its key behind A's: {queued:?}");
    let revision = clients.unlock(&key_a).await.expect("unlock A");
    transcript.push(format!("unlock A at {revision}"));
    let (key_b, revision_b) = bounded("lock by B to be granted", waiter)
        .await
        .expect("the waiting task")
        .expect("lock by B");
    assert_eq!(text(&key_b), format!("lk/{LEASE_B:x}"));
    transcript.push(format!("lock B: {} at {revision_b}", text(&key_b)));
    assert_eq!(clients.keys_under("lk/").await, vec![queued[1].clone()]);
    let revision = clients.unlock(&key_b).await.expect("unlock B");
    transcript.push(format!("unlock B at {revision}"));

    // A revoked lease cannot lock.
    clients.grant(LEASE_REVOKED, 60).await;
    clients.revoke(LEASE_REVOKED).await;
    let refused = clients
        .lock("lk", LEASE_REVOKED)
        .await
        .expect_err("lock with a revoked lease");
    assert_eq!(refused.message, "etcdserver: requested lease not found");
    transcript.push(format!("lock with a revoked lease: {refused:?}"));

    // A waiter whose client gives up (drops its call) leaves the queue.
    let (key_a, _) = clients.lock("lk", LEASE_A).await.expect("lock by A");
    let gave_up =
        tokio::time::timeout(Duration::from_millis(500), clients.lock("lk", LEASE_B)).await;
    assert!(gave_up.is_err(), "lock by B was granted while A held it");
    eventually("B's abandoned key is deleted", || async {
        clients.keys_under("lk/").await.len() == 1
    })
    .await;
    clients.unlock(&key_a).await.expect("unlock A");
    transcript.push("an abandoned waiter's key is deleted".to_string());

    // Without a lease, the server grants one with etcd's session TTL.
    let (key, _) = clients
        .lock("lk-no-lease", 0)
        .await
        .expect("lock without a lease");
    let lease = text(&key)
        .strip_prefix("lk-no-lease/")
        .and_then(|hex| i64::from_str_radix(hex, 16).ok())
        .unwrap_or_else(|| panic!("{} is not name/<lease hex>", text(&key)));
    let (granted_ttl, n_keys) = clients.lease_ttl_and_keys(lease).await;
    transcript.push(format!(
        "lock without a lease: a lease of {granted_ttl} s with {n_keys} key"
    ));
    assert_eq!((granted_ttl, n_keys), (60, 1));
    clients.revoke(lease).await;

    // Unlock of an empty key is refused as a delete of an empty key is.
    let refused = clients
        .unlock(b"")
        .await
        .expect_err("unlock of an empty key");
    transcript.push(format!("unlock of an empty key: {refused:?}"));
}

async fn elections(endpoint: &str, transcript: &mut Vec<String>) {
    let clients = Clients {
        endpoint: endpoint.to_string(),
    };

    // No candidate yet.
    let refused = clients
        .leader("el")
        .await
        .expect_err("leader of an empty election");
    assert_eq!(refused.message, "election: no leader");
    transcript.push(format!("leader of an empty election: {refused:?}"));

    // An observer started before any candidate sees the first one. etcd sends
    // a server stream's response headers with its first message, so the call
    // itself blocks until there is a leader: it runs on its own task.
    let (observed_sender, mut observed) = tokio::sync::mpsc::unbounded_channel();
    let observer_endpoint = endpoint.to_string();
    let observer = tokio::spawn(async move {
        let mut election = client!(ElectionClient, observer_endpoint);
        let name = b"el".to_vec().into();
        let mut stream = election
            .observe(LeaderRequest { name })
            .await
            .expect("observe")
            .into_inner();
        while let Some(response) = stream.message().await.expect("the observe stream") {
            if observed_sender.send(describe_leader(&response)).is_err() {
                break;
            }
        }
    });
    macro_rules! next_observed {
        () => {
            bounded("an observed leader", observed.recv())
                .await
                .expect("the observe stream ended")
        };
    }

    let leader_a = clients
        .campaign("el", LEASE_A, "a1")
        .await
        .expect("campaign A");
    assert_eq!(text(&leader_a.name), "el");
    assert_eq!(text(&leader_a.key), format!("el/{LEASE_A:x}"));
    assert_eq!(leader_a.lease, LEASE_A);
    transcript.push(format!("campaign A: {leader_a:?}"));
    transcript.push(format!("observed: {}", next_observed!()));

    let leader = clients.leader("el").await.expect("leader");
    let kv = leader.kv.as_ref().expect("a leader response has a kv");
    assert_eq!(
        (kv.key.clone(), text(&kv.value), kv.create_revision),
        (leader_a.key.clone(), "a1".to_string(), leader_a.rev)
    );
    transcript.push(format!("leader: {}", describe_leader(&leader)));

    let revision = clients
        .proclaim(Some(leader_a.clone()), "a2")
        .await
        .expect("proclaim by the leader");
    transcript.push(format!("proclaim a2 at {revision}"));
    transcript.push(format!("observed: {}", next_observed!()));
    let leader = clients.leader("el").await.expect("leader");
    assert_eq!(leader_value(&leader), "a2");

    // A second candidate waits for the leader to resign.
    let campaigner_clients = Clients {
        endpoint: endpoint.to_string(),
    };
    let mut campaigner =
        tokio::spawn(async move { campaigner_clients.campaign("el", LEASE_B, "b1").await });
    assert!(
        tokio::time::timeout(STILL_BLOCKED_AFTER, &mut campaigner)
            .await
            .is_err(),
        "campaign by B won while A led"
    );
    let leader = clients.leader("el").await.expect("leader");
    assert_eq!(leader_value(&leader), "a2");

    // Only the leadership a LeaderKey names may proclaim.
    let stale = LeaderKey {
        rev: leader_a.rev + 1000,
        ..leader_a.clone()
    };
    let refused = clients
        .proclaim(Some(stale), "x")
        .await
        .expect_err("proclaim with a wrong revision");
    assert_eq!(refused.message, "election: not leader");
    transcript.push(format!("proclaim by a non-leader: {refused:?}"));
    let refused = clients
        .proclaim(None, "x")
        .await
        .expect_err("proclaim without a leader key");
    transcript.push(format!("proclaim without a leader key: {refused:?}"));
    let refused = clients
        .resign(None)
        .await
        .expect_err("resign without a leader key");
    transcript.push(format!("resign without a leader key: {refused:?}"));

    let revision = clients
        .resign(Some(leader_a.clone()))
        .await
        .expect("resign A");
    transcript.push(format!("resign A at {revision}"));
    let leader_b = bounded("campaign by B to win", campaigner)
        .await
        .expect("the campaigning task")
        .expect("campaign B");
    assert_eq!(text(&leader_b.key), format!("el/{LEASE_B:x}"));
    transcript.push(format!("campaign B: {leader_b:?}"));
    transcript.push(format!("observed: {}", next_observed!()));
    let leader = clients.leader("el").await.expect("leader");
    assert_eq!(leader_value(&leader), "b1");
    transcript.push(format!("leader: {}", describe_leader(&leader)));

    // Resigning an ended leadership is no error and changes nothing.
    let revision = clients
        .resign(Some(leader_a))
        .await
        .expect("resign A again");
    transcript.push(format!("resign A again at {revision}"));
    let revision = clients.resign(Some(leader_b)).await.expect("resign B");
    transcript.push(format!("resign B at {revision}"));
    let refused = clients
        .leader("el")
        .await
        .expect_err("leader after every resign");
    assert_eq!(refused.message, "election: no leader");
    transcript.push(format!("leader after every resign: {refused:?}"));
    observer.abort();
}

/// Holder D locks; waiter E queues; E's lease is revoked (which deletes E's
/// key); D unlocks. Returns what E's Lock call answered.
async fn lock_after_lease_ends(endpoint: String) -> Result<Vec<u8>, Refusal> {
    let clients = Clients {
        endpoint: endpoint.clone(),
    };
    clients.grant(LEASE_HOLDER, 60).await;
    clients.grant(LEASE_WAITER, 60).await;
    let (holder_key, _) = clients.lock("lk", LEASE_HOLDER).await.expect("lock by D");
    let waiter_clients = Clients { endpoint };
    let mut waiter = tokio::spawn(async move { waiter_clients.lock("lk", LEASE_WAITER).await });
    assert!(
        tokio::time::timeout(STILL_BLOCKED_AFTER, &mut waiter)
            .await
            .is_err(),
        "lock by E was granted while D held the lock"
    );
    clients.revoke(LEASE_WAITER).await;
    clients.unlock(&holder_key).await.expect("unlock D");
    let outcome = bounded("E's lock to answer", waiter)
        .await
        .expect("the waiting task");
    outcome.map(|(key, _)| key)
}

fn leader_value(response: &LeaderResponse) -> String {
    text(
        &response
            .kv
            .as_ref()
            .expect("a leader response has a kv")
            .value,
    )
}

fn describe_leader(response: &LeaderResponse) -> String {
    let kv = response.kv.as_ref().expect("a leader response has a kv");
    format!(
        "{}={} created {} modified {} lease {:x} (header revision {})",
        text(&kv.key),
        text(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.lease,
        response.header.map_or(0, |header| header.revision)
    )
}

fn header_revision(header: Option<ResponseHeader>) -> i64 {
    header.expect("a response header").revision
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Awaits `future`, failing the test if it takes longer than [`STEP_TIMEOUT`].
async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {STEP_TIMEOUT:?}"))
}

/// Polls `check` until it holds, failing the test after [`STEP_TIMEOUT`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not after {STEP_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

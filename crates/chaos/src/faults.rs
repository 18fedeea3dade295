//! Fault injection on the test hosts: a schedule drawn from the seed picks a
//! fault kind and a target, injects it for a bounded time, heals it, and lets
//! the cluster recover before the next one. One fault at a time, so a
//! three-member cluster always keeps a quorum once a fault is healed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use proto::etcdserverpb::cluster_client::ClusterClient;
use proto::etcdserverpb::{MemberAddRequest, MemberListRequest, MemberRemoveRequest};
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;

use crate::client::{REQUEST_TIMEOUT, bounded, channel, status};
use crate::history::Recorder;
use crate::hosts::Hosts;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL a member, restart it on the same data directory.
    Kill,
    /// SIGSTOP a member, then SIGCONT.
    Pause,
    /// Cut one member off from the other members (clients still reach it).
    Partition,
    /// Drop what one member receives from the others, not what it sends.
    Asymmetric,
    /// Cut the current leader off from the other members.
    Leader,
    /// Packet loss (10%) and delay (50 ms) on one member's link.
    Loss,
    /// Replace a member under load: member remove, a new empty data directory,
    /// member add, start with --initial-cluster-state existing.
    Membership,
    /// Fill the small (tmpfs) disk of member 0, then free it.
    Disk,
}

impl FaultKind {
    pub fn all() -> Vec<FaultKind> {
        vec![
            FaultKind::Kill,
            FaultKind::Pause,
            FaultKind::Partition,
            FaultKind::Asymmetric,
            FaultKind::Leader,
            FaultKind::Loss,
            FaultKind::Membership,
            FaultKind::Disk,
        ]
    }
}

/// One injected fault, as the summary reports it.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    pub kind: FaultKind,
    pub member: String,
    pub injected_at_seconds: f64,
    pub healed_at_seconds: f64,
    pub note: String,
}

/// Something the injector saw that is not a fault it injected.
#[derive(Clone, Debug, Serialize)]
pub struct Observation {
    pub at_seconds: f64,
    pub text: String,
}

pub struct Injector {
    pub hosts: Arc<Mutex<Hosts>>,
    pub kinds: Vec<FaultKind>,
    pub seed: u64,
    pub recorder: Recorder,
    pub deadline: Instant,
    pub cancelled: Arc<AtomicBool>,
    pub faults: Vec<FaultRecord>,
    pub observations: Vec<Observation>,
}

pub fn lock(hosts: &Mutex<Hosts>) -> MutexGuard<'_, Hosts> {
    hosts
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Injector {
    fn seconds(&self) -> f64 {
        self.recorder.started().elapsed().as_secs_f64()
    }

    fn running(&self) -> bool {
        Instant::now() < self.deadline && !self.cancelled.load(Ordering::Relaxed)
    }

    /// Sleeps `duration`, or less when the run ends first.
    async fn sleep_within_run(&self, duration: Duration) {
        let until = (Instant::now() + duration).min(self.deadline);
        // Bounded by `until`; wakes every 100 ms to notice cancellation.
        while Instant::now() < until && !self.cancelled.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100).min(until - Instant::now())).await;
        }
    }

    /// Injects faults until the deadline; everything is healed on return.
    pub async fn run(&mut self) {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let n_members = lock(&self.hosts).members.len();
        // Let the workload start on a healthy cluster.
        self.sleep_within_run(Duration::from_secs(2)).await;
        // Kinds are drawn in rounds, each a seeded shuffle of every kind, so a
        // short run still covers as many kinds as it has faults.
        let mut round: Vec<FaultKind> = Vec::new();
        while self.running() && !self.kinds.is_empty() {
            if round.is_empty() {
                round = self.kinds.clone();
                round.shuffle(&mut rng);
            }
            let kind = round.pop().unwrap_or(FaultKind::Kill);
            let target = rng.random_range(0..n_members);
            let hold = Duration::from_millis(rng.random_range(2_000..6_000));
            let injected_at = self.seconds();
            let (member_idx, note) = match self.inject(kind, target).await {
                Ok(injected) => injected,
                Err(error) => {
                    self.observe(format!("{kind:?} on m{target} not injected: {error:#}"));
                    self.sleep_within_run(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if kind != FaultKind::Membership {
                self.sleep_within_run(hold).await;
            }
            self.heal(kind, member_idx);
            self.faults.push(FaultRecord {
                kind,
                member: format!("m{member_idx}"),
                injected_at_seconds: injected_at,
                healed_at_seconds: self.seconds(),
                note,
            });
            self.restart_exited();
            // Recovery time before the next fault.
            self.sleep_within_run(Duration::from_millis(rng.random_range(1_000..3_000)))
                .await;
        }
        for member_idx in 0..n_members {
            self.heal(FaultKind::Pause, member_idx);
            lock(&self.hosts).heal_network(member_idx);
            lock(&self.hosts).free_disk_if_small(member_idx);
        }
        self.restart_exited();
    }

    fn observe(&mut self, text: String) {
        let at_seconds = self.seconds();
        self.observations.push(Observation { at_seconds, text });
    }

    /// Restarts members whose process exited on its own, noting each exit.
    pub fn restart_exited(&mut self) {
        let exited = lock(&self.hosts).reap_exited();
        for (member_idx, status) in exited {
            let log = lock(&self.hosts).members[member_idx].log_path();
            self.observe(format!(
                "m{member_idx} exited on its own ({status}); restarted; log {}",
                log.display()
            ));
            let started = lock(&self.hosts).start(member_idx);
            if let Err(error) = started {
                self.observe(format!("m{member_idx} could not be restarted: {error:#}"));
            }
        }
    }

    /// Injects `kind`; returns the member it hit and a note.
    async fn inject(&mut self, kind: FaultKind, target: usize) -> anyhow::Result<(usize, String)> {
        match kind {
            FaultKind::Kill => {
                lock(&self.hosts).kill(target);
                Ok((target, "SIGKILL".to_string()))
            }
            FaultKind::Pause => {
                lock(&self.hosts).pause(target)?;
                Ok((target, "SIGSTOP".to_string()))
            }
            FaultKind::Partition => {
                lock(&self.hosts).partition(target, true)?;
                Ok((target, "cut off from its peers both ways".to_string()))
            }
            FaultKind::Asymmetric => {
                lock(&self.hosts).partition(target, false)?;
                Ok((
                    target,
                    "receives nothing from its peers, still sends".to_string(),
                ))
            }
            FaultKind::Leader => {
                let leader = self.find_leader().await.unwrap_or(target);
                lock(&self.hosts).partition(leader, true)?;
                Ok((
                    leader,
                    "the leader, cut off from its peers both ways".to_string(),
                ))
            }
            FaultKind::Loss => {
                lock(&self.hosts).degrade(target, 10, 50)?;
                let how = if lock(&self.hosts).has_netem {
                    "netem loss 10% delay 50ms"
                } else {
                    "iptables 10% random drop + tbf 2mbit (no netem in this kernel)"
                };
                Ok((target, how.to_string()))
            }
            FaultKind::Membership => {
                let note = self.replace_member(target).await?;
                Ok((target, note))
            }
            FaultKind::Disk => {
                let small = lock(&self.hosts)
                    .members
                    .iter()
                    .position(|member| member.small_disk);
                let Some(member_idx) = small else {
                    anyhow::bail!("no member has a small disk");
                };
                let written = lock(&self.hosts).fill_disk(member_idx)?;
                Ok((
                    member_idx,
                    format!("tmpfs filled ({} MiB filler)", written >> 20),
                ))
            }
        }
    }

    fn heal(&mut self, kind: FaultKind, member_idx: usize) {
        let mut hosts = lock(&self.hosts);
        match kind {
            FaultKind::Kill => {
                if let Err(error) = hosts.start(member_idx) {
                    drop(hosts);
                    self.observe(format!("m{member_idx} could not be restarted: {error:#}"));
                }
            }
            FaultKind::Pause => {
                let _ = hosts.resume(member_idx);
            }
            FaultKind::Partition | FaultKind::Asymmetric | FaultKind::Leader | FaultKind::Loss => {
                hosts.heal_network(member_idx);
            }
            FaultKind::Membership => {}
            FaultKind::Disk => hosts.free_disk_if_small(member_idx),
        }
    }

    async fn find_leader(&self) -> Option<usize> {
        let urls = lock(&self.hosts).client_urls();
        for (member_idx, url) in urls.iter().enumerate() {
            if let Some((member_id, leader_id)) = status(url).await
                && member_id == leader_id
            {
                return Some(member_idx);
            }
        }
        None
    }

    /// Member remove, wipe, member add, start as a joining member. Asks the
    /// other members in turn; each call is bounded.
    async fn replace_member(&mut self, target: usize) -> anyhow::Result<String> {
        let (urls, target_peer_url, target_name) = {
            let hosts = lock(&self.hosts);
            let member = &hosts.members[target];
            (hosts.client_urls(), member.peer_url(), member.name.clone())
        };
        let others: Vec<&String> = urls
            .iter()
            .enumerate()
            .filter(|(member_idx, _)| *member_idx != target)
            .map(|(_, url)| url)
            .collect();
        anyhow::ensure!(!others.is_empty(), "a single member cannot be replaced");
        let list = |url: String| async move {
            let mut cluster = ClusterClient::new(channel(&url)?);
            Ok::<_, anyhow::Error>(
                bounded(
                    REQUEST_TIMEOUT,
                    cluster.member_list(MemberListRequest::default()),
                )
                .await?,
            )
        };
        // 1. Remove it, through any other member, until the list lacks it.
        // etcd's strict reconfiguration check refuses while a member has been
        // connected for less than 5 s (just after an earlier fault): retry for
        // a little longer than that.
        let mut removed = false;
        let mut last_error = String::new();
        for attempt in 0..16 {
            let url = others[attempt % others.len()].clone();
            let Ok(members) = list(url.clone()).await else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            let Some(id) = members
                .members
                .iter()
                .find(|member| member.peer_ur_ls.contains(&target_peer_url))
                .map(|member| member.id)
            else {
                removed = true;
                break;
            };
            let mut cluster = ClusterClient::new(channel(&url)?);
            if let Err(status) = bounded(
                REQUEST_TIMEOUT,
                cluster.member_remove(MemberRemoveRequest { id }),
            )
            .await
            {
                last_error = format!("{}: {}", status.code(), status.message());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        anyhow::ensure!(
            removed,
            "{target_name} could not be removed (last MemberRemove error: {last_error})"
        );
        // 2. A fresh data directory; the removed process stops itself, and is killed anyway.
        // 3. Add it back, through any other member, until the list has it.
        let mut initial_cluster = None;
        last_error.clear();
        for attempt in 0..10 {
            let url = others[attempt % others.len()].clone();
            let mut cluster = ClusterClient::new(channel(&url)?);
            let added = bounded(
                REQUEST_TIMEOUT,
                cluster.member_add(MemberAddRequest {
                    peer_ur_ls: vec![target_peer_url.clone()],
                    is_learner: false,
                }),
            )
            .await;
            if let Err(status) = added {
                last_error = format!("{}: {}", status.code(), status.message());
            }
            if let Ok(members) = list(url).await
                && members
                    .members
                    .iter()
                    .any(|member| member.peer_ur_ls.contains(&target_peer_url))
            {
                let hosts = lock(&self.hosts);
                initial_cluster = Some(
                    members
                        .members
                        .iter()
                        .filter_map(|member| {
                            let peer_url = member.peer_ur_ls.first()?;
                            let name = hosts
                                .members
                                .iter()
                                .find(|host| host.peer_url() == *peer_url)
                                .map(|host| host.name.clone())?;
                            Some(format!("{name}={peer_url}"))
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let Some(initial_cluster) = initial_cluster else {
            // Leave it out; a later replacement of it adds it back.
            let mut hosts = lock(&self.hosts);
            hosts.kill(target);
            hosts.members[target].removed = true;
            drop(hosts);
            anyhow::bail!(
                "{target_name} was removed but could not be added back (last MemberAdd error: {last_error})"
            );
        };
        {
            let mut hosts = lock(&self.hosts);
            hosts.wipe_for_replacement(target, initial_cluster);
            hosts.start(target)?;
        }
        Ok(
            "removed, wiped, added back and restarted with --initial-cluster-state existing"
                .to_string(),
        )
    }
}

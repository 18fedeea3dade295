//! The node lifecycle's decisions, sans-IO: from the Nodes, their Leases
//! and the controller's own clock, which nodes to mark `Unknown`, which
//! lifecycle taints each should carry, and how fast the zones may have
//! `NoExecute` taints added (the brake against mass eviction).
//!
//! Heartbeats are timed on the controller's clock, as upstream's
//! `probeTimestamp`: a node's age is how long since the controller last saw
//! its Lease's `renewTime` or its Ready `lastHeartbeatTime` change, so clock
//! skew between machines does not matter, and a new leader (or a restarted
//! server) gives every node a full grace period from when it first sees it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};

/// The taint of a node whose agent stopped reporting (Ready `Unknown`).
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a node whose agent reports it not ready (Ready `False`).
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint an operator puts on a node known to be down for good.
pub const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";
/// The label that puts a node in a zone; nodes without it share one zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Upstream's `--unhealthy-zone-threshold`: the share of a zone's nodes
/// not Ready from which the zone is partially disrupted.
pub const UNHEALTHY_ZONE_THRESHOLD: f64 = 0.55;
/// Upstream's `--large-cluster-size-threshold`: a partially disrupted zone
/// of at most this many nodes stops evicting; a larger one slows down.
pub const LARGE_CLUSTER_SIZE_THRESHOLD: usize = 50;
/// Upstream's `--secondary-node-eviction-rate`: nodes per second tainted
/// for eviction in a partially disrupted large zone.
pub const SECONDARY_EVICTION_RATE: f64 = 0.01;

/// The conditions a lost node's agent can no longer vouch for.
pub const CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];
/// Upstream's texts for them.
pub const REASON_UNKNOWN: &str = "NodeStatusUnknown";
pub const MESSAGE_UNKNOWN: &str = "Kubelet stopped posting node status.";
pub const REASON_NEVER_UPDATED: &str = "NodeStatusNeverUpdated";
pub const MESSAGE_NEVER_UPDATED: &str = "Kubelet never posted node status.";

/// How the node lifecycle is timed and how fast it evicts.
#[derive(Clone, Debug)]
pub struct LifecycleConfig {
    /// How long a node may go without a heartbeat before it is `Unknown`
    /// (upstream's `--node-monitor-grace-period`).
    pub grace_period: Duration,
    /// Nodes per second tainted for eviction in a healthy zone; `None`
    /// for no limit (shoal's default: at once). Upstream's
    /// `--node-eviction-rate` is 0.1.
    pub eviction_rate: Option<f64>,
}

/// What the controller has seen of one node's heartbeats.
#[derive(Clone, Debug)]
struct Seen {
    /// When (on the controller's clock) a heartbeat last changed.
    probe: Instant,
    lease_renew: Option<MicroTime>,
    ready_heartbeat: Option<Time>,
}

/// The heartbeats of every node, timed on the controller's clock.
#[derive(Debug, Default)]
pub struct Heartbeats {
    seen: HashMap<String, Seen>,
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|condition| condition.type_ == "Ready")
}

/// The node's Ready status: "True", "False", "Unknown", or `None` before
/// its agent first reported.
pub fn ready_status(node: &Node) -> Option<&str> {
    ready_condition(node).map(|condition| condition.status.as_str())
}

pub fn name_of(node: &Node) -> &str {
    node.metadata.name.as_deref().unwrap_or_default()
}

impl Heartbeats {
    /// Notes the node's heartbeats as of `now`; returns when they last
    /// changed. A node seen for the first time counts as just heard from.
    pub fn observe(&mut self, node: &Node, lease: Option<&Lease>, now: Instant) -> Instant {
        let lease_renew = lease
            .and_then(|lease| lease.spec.as_ref())
            .and_then(|spec| spec.renew_time.clone());
        let ready_heartbeat =
            ready_condition(node).and_then(|ready| ready.last_heartbeat_time.clone());
        let seen = self
            .seen
            .entry(name_of(node).to_string())
            .or_insert_with(|| Seen {
                probe: now,
                lease_renew: lease_renew.clone(),
                ready_heartbeat: ready_heartbeat.clone(),
            });
        if seen.lease_renew != lease_renew || seen.ready_heartbeat != ready_heartbeat {
            seen.probe = now;
            seen.lease_renew = lease_renew;
            seen.ready_heartbeat = ready_heartbeat;
        }
        seen.probe
    }

    /// Forgets the nodes not in `present`.
    pub fn retain(&mut self, present: &std::collections::HashSet<&str>) {
        self.seen.retain(|name, _| present.contains(name.as_str()));
    }

    /// Starts every node's grace period afresh (leaving a disruption of
    /// every zone: the nodes may have been cut off from this server, not
    /// dead).
    pub fn reset(&mut self, now: Instant) {
        for seen in self.seen.values_mut() {
            seen.probe = now;
        }
    }
}

/// The conditions to write on a node not heard from for its grace period:
/// every one of `CONDITIONS` `Unknown` (missing ones added as never
/// updated), the others as they are. `None` when Ready is already `Unknown`.
pub fn unknown_conditions(node: &Node, now: &Time) -> Option<Vec<NodeCondition>> {
    if ready_status(node) == Some("Unknown") {
        return None;
    }
    let mut conditions: Vec<NodeCondition> = node
        .status
        .as_ref()
        .and_then(|status| status.conditions.clone())
        .unwrap_or_default();
    for type_ in CONDITIONS {
        match conditions
            .iter_mut()
            .find(|condition| condition.type_ == type_)
        {
            Some(condition) => {
                if condition.status != "Unknown" {
                    condition.status = "Unknown".to_string();
                    condition.reason = Some(REASON_UNKNOWN.to_string());
                    condition.message = Some(MESSAGE_UNKNOWN.to_string());
                    condition.last_transition_time = Some(now.clone());
                }
            }
            None => conditions.push(NodeCondition {
                type_: type_.to_string(),
                status: "Unknown".to_string(),
                reason: Some(REASON_NEVER_UPDATED.to_string()),
                message: Some(MESSAGE_NEVER_UPDATED.to_string()),
                last_heartbeat_time: Some(now.clone()),
                last_transition_time: Some(now.clone()),
            }),
        }
    }
    Some(conditions)
}

/// The lifecycle taint a node's Ready status calls for: `not-ready` for
/// False, `unreachable` for Unknown, none for True or not yet reported.
pub fn lifecycle_taint(ready: Option<&str>) -> Option<&'static str> {
    match ready {
        Some("False") => Some(NOT_READY),
        Some("Unknown") => Some(UNREACHABLE),
        _ => None,
    }
}

fn is_lifecycle(taint: &Taint, effect: &str) -> bool {
    taint.effect == effect && (taint.key == NOT_READY || taint.key == UNREACHABLE)
}

/// The node's lifecycle taint of `effect`, if it has one.
pub fn current_lifecycle_taint<'a>(node: &'a Node, effect: &str) -> Option<&'a str> {
    node.spec
        .as_ref()?
        .taints
        .as_ref()?
        .iter()
        .find(|taint| is_lifecycle(taint, effect))
        .map(|taint| taint.key.as_str())
}

/// The node's taints with its lifecycle taints set to `no_schedule` and
/// `no_execute` (a kept taint keeps its `timeAdded`); `None` when that is
/// what it has.
pub fn with_lifecycle_taints(
    node: &Node,
    no_schedule: Option<&str>,
    no_execute: Option<&str>,
    now: &Time,
) -> Option<Vec<Taint>> {
    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|spec| spec.taints.clone())
        .unwrap_or_default();
    let mut taints: Vec<Taint> = current
        .iter()
        .filter(|taint| {
            let wanted = |effect: &str, key: Option<&str>| {
                !is_lifecycle(taint, effect) || key == Some(taint.key.as_str())
            };
            wanted("NoSchedule", no_schedule) && wanted("NoExecute", no_execute)
        })
        .cloned()
        .collect();
    for (effect, key) in [("NoSchedule", no_schedule), ("NoExecute", no_execute)] {
        if let Some(key) = key
            && !taints
                .iter()
                .any(|taint| taint.key == key && taint.effect == effect)
        {
            taints.push(Taint {
                key: key.to_string(),
                value: None,
                effect: effect.to_string(),
                time_added: Some(now.clone()),
            });
        }
    }
    (taints != current).then_some(taints)
}

/// A zone's health, as upstream's `ComputeZoneState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneState {
    Normal,
    /// At least three nodes and at least `UNHEALTHY_ZONE_THRESHOLD` of
    /// them not Ready: possibly a partition, so evictions slow or stop.
    PartialDisruption,
    /// No node Ready: the zone is down (evictions go on at the normal
    /// rate, unless every zone is down).
    FullDisruption,
}

/// Upstream's rule, exactly: no Ready node (and some) is a full
/// disruption; more than two not Ready and at least 55% of the zone a
/// partial one.
pub fn zone_state(n_ready: usize, n_not_ready: usize) -> ZoneState {
    if n_ready == 0 && n_not_ready > 0 {
        ZoneState::FullDisruption
    } else if n_not_ready > 2
        && n_not_ready as f64 / (n_ready + n_not_ready) as f64 >= UNHEALTHY_ZONE_THRESHOLD
    {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// How fast a zone's nodes may be tainted for eviction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    Unlimited,
    PerSecond(f64),
    Stopped,
}

/// The eviction rate of a zone of `n_nodes` in `state` (upstream's
/// `setLimiterInZone` and `ReducedQPSFunc`), `normal` being the healthy
/// rate; every zone fully disrupted stops them all.
pub fn zone_rate(state: ZoneState, n_nodes: usize, normal: Rate, all_disrupted: bool) -> Rate {
    if all_disrupted {
        return Rate::Stopped;
    }
    match state {
        ZoneState::Normal | ZoneState::FullDisruption => normal,
        ZoneState::PartialDisruption if n_nodes > LARGE_CLUSTER_SIZE_THRESHOLD => {
            Rate::PerSecond(SECONDARY_EVICTION_RATE)
        }
        ZoneState::PartialDisruption => Rate::Stopped,
    }
}

/// A token bucket of burst one (upstream's eviction limiter).
#[derive(Clone, Debug)]
pub struct Limiter {
    rate: Rate,
    tokens: f64,
    at: Instant,
}

impl Limiter {
    pub fn new(rate: Rate, now: Instant) -> Limiter {
        Limiter {
            rate,
            tokens: 1.0,
            at: now,
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Changes the rate; the bucket starts empty at a new finite rate, as
    /// upstream's `SwapLimiter`.
    pub fn set_rate(&mut self, rate: Rate, now: Instant) {
        if rate != self.rate {
            self.rate = rate;
            self.tokens = 0.0;
            self.at = now;
        }
    }

    /// Takes a token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        match self.rate {
            Rate::Unlimited => true,
            Rate::Stopped => false,
            Rate::PerSecond(per_second) => {
                let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
                self.tokens = (self.tokens + elapsed * per_second).min(1.0);
                self.at = now;
                if self.tokens >= 1.0 {
                    self.tokens -= 1.0;
                    true
                } else {
                    false
                }
            }
        }
    }
}

pub fn zone_of(node: &Node) -> String {
    node.metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(ZONE_LABEL).cloned())
        .unwrap_or_default()
}

/// One write the monitor asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Write these conditions (the node's `Unknown` ones) to its status.
    MarkUnknown {
        node: String,
        conditions: Vec<NodeCondition>,
    },
    /// Set the node's taints to these.
    SetTaints { node: String, taints: Vec<Taint> },
}

/// A change of a zone's state, for the log.
#[derive(Clone, Debug, PartialEq)]
pub struct ZoneChange {
    pub zone: String,
    pub from: Option<ZoneState>,
    pub to: ZoneState,
}

/// The node lifecycle controller's memory and decisions: call `pass` with
/// every node (and its Lease) every monitor period.
pub struct Monitor {
    config: LifecycleConfig,
    heartbeats: Heartbeats,
    zones: BTreeMap<String, (ZoneState, Limiter)>,
    all_disrupted: bool,
}

/// What one pass found.
#[derive(Debug, Default)]
pub struct Pass {
    pub actions: Vec<Action>,
    pub zone_changes: Vec<ZoneChange>,
    /// Whether every zone went fully disrupted (true) or came back (false).
    pub all_disrupted_changed: Option<bool>,
}

impl Monitor {
    pub fn new(config: LifecycleConfig) -> Monitor {
        Monitor {
            config,
            heartbeats: Heartbeats::default(),
            zones: BTreeMap::new(),
            all_disrupted: false,
        }
    }

    fn normal_rate(&self) -> Rate {
        match self.config.eviction_rate {
            None => Rate::Unlimited,
            Some(rate) if rate > 0.0 => Rate::PerSecond(rate),
            Some(_) => Rate::Stopped,
        }
    }

    /// One look at every node: the writes to make now. `now` is the
    /// controller's clock, `wall` the time written into conditions and
    /// taints.
    pub fn pass(&mut self, nodes: &[(&Node, Option<&Lease>)], now: Instant, wall: &Time) -> Pass {
        let mut pass = Pass::default();
        let grace = self.config.grace_period;
        let present: std::collections::HashSet<&str> =
            nodes.iter().map(|(node, _)| name_of(node)).collect();
        self.heartbeats.retain(&present);

        // Each node's Ready as it will be after this pass, and its age.
        struct Assessed<'a> {
            node: &'a Node,
            ready: Option<String>,
            age: Duration,
            zone: String,
        }
        let mut assessed = Vec::with_capacity(nodes.len());
        for (node, lease) in nodes {
            let probe = self.heartbeats.observe(node, *lease, now);
            let age = now.saturating_duration_since(probe);
            let mut ready = ready_status(node).map(str::to_string);
            if age > grace
                && let Some(conditions) = unknown_conditions(node, wall)
            {
                ready = Some("Unknown".to_string());
                pass.actions.push(Action::MarkUnknown {
                    node: name_of(node).to_string(),
                    conditions,
                });
            }
            assessed.push(Assessed {
                node,
                ready,
                age,
                zone: zone_of(node),
            });
        }

        // The zones' states. A node counts as not Ready for its zone once
        // half its grace period has passed without a heartbeat: nodes cut
        // off together lose their Leases up to one renewal apart, and the
        // first one to run out must already see the others going, or it
        // would be evicted before the brake is on.
        let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for node in &assessed {
            let entry = counts.entry(node.zone.clone()).or_default();
            if node.ready.as_deref() == Some("True") && node.age <= grace / 2 {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
        let states: BTreeMap<String, (ZoneState, usize)> = counts
            .into_iter()
            .map(|(zone, (ready, not_ready))| {
                (zone, (zone_state(ready, not_ready), ready + not_ready))
            })
            .collect();
        let all_disrupted = !states.is_empty()
            && states
                .values()
                .all(|(state, _)| *state == ZoneState::FullDisruption);
        if all_disrupted != self.all_disrupted {
            pass.all_disrupted_changed = Some(all_disrupted);
            if !all_disrupted {
                // The cluster is back from a disruption of every zone
                // (most likely this server was cut off): every node gets
                // a grace period again before it is judged.
                self.heartbeats.reset(now);
                for node in &mut assessed {
                    node.age = Duration::ZERO;
                }
            }
            self.all_disrupted = all_disrupted;
        }
        self.zones.retain(|zone, _| states.contains_key(zone));
        let normal = self.normal_rate();
        for (zone, (state, n_nodes)) in &states {
            let rate = zone_rate(*state, *n_nodes, normal, all_disrupted);
            match self.zones.get_mut(zone) {
                Some((current, limiter)) => {
                    if current != state {
                        pass.zone_changes.push(ZoneChange {
                            zone: zone.to_string(),
                            from: Some(*current),
                            to: *state,
                        });
                        *current = *state;
                    }
                    limiter.set_rate(rate, now);
                }
                None => {
                    if *state != ZoneState::Normal {
                        pass.zone_changes.push(ZoneChange {
                            zone: zone.to_string(),
                            from: None,
                            to: *state,
                        });
                    }
                    self.zones
                        .insert(zone.to_string(), (*state, Limiter::new(rate, now)));
                }
            }
        }

        // The taints, the longest silent first (they were lost first).
        assessed.sort_by(|a, b| {
            b.age
                .cmp(&a.age)
                .then_with(|| name_of(a.node).cmp(name_of(b.node)))
        });
        for node in &assessed {
            let wanted = lifecycle_taint(node.ready.as_deref());
            let has_no_execute = current_lifecycle_taint(node.node, "NoExecute");
            let no_execute = if self.all_disrupted {
                // Every zone down: most likely this server is the one cut
                // off. Nothing is evicted, and what was marked is unmarked.
                None
            } else {
                match (wanted, has_no_execute) {
                    (None, _) => None,
                    // Already marked for eviction: the mark follows the
                    // condition (not-ready ⇄ unreachable) without a token.
                    (Some(key), Some(_)) => Some(key),
                    // Unknown, but not silent for a whole grace period on
                    // this controller's clock (a new leader, or the
                    // cluster just back from a disruption of every zone):
                    // its agent gets the time to report before its pods
                    // are evicted.
                    (Some(UNREACHABLE), None) if node.age <= grace => None,
                    (Some(key), None) => {
                        let limiter = &mut self
                            .zones
                            .get_mut(node.zone.as_str())
                            .expect("every assessed node's zone has a limiter")
                            .1;
                        limiter.try_take(now).then_some(key)
                    }
                }
            };
            if let Some(taints) = with_lifecycle_taints(node.node, wanted, no_execute, wall) {
                pass.actions.push(Action::SetTaints {
                    node: name_of(node.node).to_string(),
                    taints,
                });
            }
        }
        pass
    }

    /// The zones' current states.
    pub fn zone_states(&self) -> BTreeMap<String, ZoneState> {
        self.zones
            .iter()
            .map(|(zone, (state, _))| (zone.clone(), *state))
            .collect()
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;

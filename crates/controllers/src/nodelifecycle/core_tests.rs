//! The node lifecycle's decisions, on a simulated cluster: nodes whose
//! agents renew (or stop renewing) their Leases, a controller clock, and
//! the monitor's actions applied back to the nodes as the API would.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use super::*;

const GRACE: Duration = Duration::from_secs(8);
const TICK: Duration = Duration::from_millis(500);

fn wall(seconds: f64) -> Time {
    Time(Timestamp::from_millisecond(1_800_000_000_000 + (seconds * 1000.0) as i64).unwrap())
}

/// A simulated cluster: nodes, their leases, and which agents are alive.
struct Sim {
    start: Instant,
    elapsed: Duration,
    nodes: BTreeMap<String, Node>,
    leases: BTreeMap<String, Lease>,
    alive: BTreeMap<String, bool>,
    monitor: Monitor,
    /// Every action the monitor took, with when.
    log: Vec<(Duration, Action)>,
}

fn node(name: &str, zone: Option<&str>) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: zone.map(|zone| [(ZONE_LABEL.to_string(), zone.to_string())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            conditions: Some(
                CONDITIONS
                    .iter()
                    .map(|type_| NodeCondition {
                        type_: type_.to_string(),
                        status: if *type_ == "Ready" { "True" } else { "False" }.into(),
                        last_heartbeat_time: Some(wall(0.0)),
                        ..NodeCondition::default()
                    })
                    .collect(),
            ),
            ..NodeStatus::default()
        }),
    }
}

impl Sim {
    fn new(n_nodes: usize, zone: Option<&str>) -> Sim {
        Sim::with_config(
            n_nodes,
            zone,
            LifecycleConfig {
                grace_period: GRACE,
                eviction_rate: None,
            },
        )
    }

    fn with_config(n_nodes: usize, zone: Option<&str>, config: LifecycleConfig) -> Sim {
        let mut sim = Sim {
            start: Instant::now(),
            elapsed: Duration::ZERO,
            nodes: BTreeMap::new(),
            leases: BTreeMap::new(),
            alive: BTreeMap::new(),
            monitor: Monitor::new(config),
            log: Vec::new(),
        };
        for index in 0..n_nodes {
            sim.add(&format!("node-{index}"), zone);
        }
        sim
    }

    fn add(&mut self, name: &str, zone: Option<&str>) {
        self.nodes.insert(name.into(), node(name, zone));
        self.alive.insert(name.into(), true);
        self.renew(name);
    }

    fn renew(&mut self, name: &str) {
        let renew = MicroTime(wall(self.elapsed.as_secs_f64()).0);
        self.leases.insert(
            name.into(),
            Lease {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    renew_time: Some(renew),
                    ..LeaseSpec::default()
                }),
            },
        );
    }

    /// The agent's status report: Ready True (or False), as kubelet posts.
    fn report(&mut self, name: &str, ready: &str) {
        let now = wall(self.elapsed.as_secs_f64());
        let node = self.nodes.get_mut(name).unwrap();
        for condition in node.status.as_mut().unwrap().conditions.as_mut().unwrap() {
            let status = if condition.type_ == "Ready" {
                ready
            } else {
                "False"
            };
            if condition.status != status {
                condition.last_transition_time = Some(now.clone());
            }
            condition.status = status.into();
            condition.reason = None;
            condition.message = None;
            condition.last_heartbeat_time = Some(now.clone());
        }
    }

    /// Runs the monitor every TICK for `span`; live agents renew every 2 s
    /// (each at its own phase) and report Ready when the API says otherwise.
    fn run_for(&mut self, span: Duration) {
        let end = self.elapsed + span;
        while self.elapsed < end {
            self.elapsed += TICK;
            let names: Vec<String> = self.nodes.keys().cloned().collect();
            for (index, name) in names.iter().enumerate() {
                if !self.alive[name] {
                    continue;
                }
                let phase =
                    (self.elapsed.as_millis() as usize / TICK.as_millis() as usize + index) % 4;
                if phase == 0 {
                    self.renew(name);
                }
                if ready_status(&self.nodes[name]) != Some("True") {
                    self.report(name, "True");
                }
            }
            self.pass();
        }
    }

    fn pass(&mut self) -> Pass {
        let pairs: Vec<(&Node, Option<&Lease>)> = self
            .nodes
            .values()
            .map(|node| (node, self.leases.get(name_of(node))))
            .collect();
        let now = self.start + self.elapsed;
        let pass = self
            .monitor
            .pass(&pairs, now, &wall(self.elapsed.as_secs_f64()));
        for action in &pass.actions {
            self.log.push((self.elapsed, action.clone()));
            match action {
                Action::MarkUnknown { node, conditions } => {
                    self.nodes
                        .get_mut(node)
                        .unwrap()
                        .status
                        .as_mut()
                        .unwrap()
                        .conditions = Some(conditions.clone());
                }
                Action::SetTaints { node, taints } => {
                    self.nodes
                        .get_mut(node)
                        .unwrap()
                        .spec
                        .as_mut()
                        .unwrap()
                        .taints = Some(taints.clone());
                }
            }
        }
        pass
    }

    fn taints(&self, name: &str) -> Vec<(String, String)> {
        let mut taints: Vec<(String, String)> = self.nodes[name]
            .spec
            .as_ref()
            .and_then(|spec| spec.taints.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|taint| (taint.key, taint.effect))
            .collect();
        taints.sort();
        taints
    }

    fn evictable(&self, name: &str) -> bool {
        current_lifecycle_taint(&self.nodes[name], "NoExecute").is_some()
    }

    fn kill(&mut self, name: &str) {
        self.alive.insert(name.into(), false);
    }

    fn revive(&mut self, name: &str) {
        self.alive.insert(name.into(), true);
    }

    /// When the node first got a NoExecute lifecycle taint.
    fn tainted_at(&self, name: &str) -> Option<Duration> {
        self.log.iter().find_map(|(at, action)| match action {
            Action::SetTaints { node, taints }
                if node == name && taints.iter().any(|taint| taint.effect == "NoExecute") =>
            {
                Some(*at)
            }
            _ => None,
        })
    }
}

fn unreachable_both() -> Vec<(String, String)> {
    vec![
        (UNREACHABLE.to_string(), "NoExecute".to_string()),
        (UNREACHABLE.to_string(), "NoSchedule".to_string()),
    ]
}

#[test]
fn healthy_nodes_are_left_alone() {
    let mut sim = Sim::new(3, None);
    sim.run_for(Duration::from_secs(60));
    assert!(sim.log.is_empty(), "{:?}", sim.log);
}

#[test]
fn a_silent_node_is_unknown_and_tainted_after_the_grace_period() {
    let mut sim = Sim::new(4, None);
    sim.run_for(Duration::from_secs(10));
    sim.kill("node-1");
    let killed_at = sim.elapsed;
    sim.run_for(Duration::from_secs(7));
    assert_eq!(
        ready_status(&sim.nodes["node-1"]),
        Some("True"),
        "too early"
    );
    sim.run_for(Duration::from_secs(3));
    let node = &sim.nodes["node-1"];
    for condition in node.status.as_ref().unwrap().conditions.as_ref().unwrap() {
        assert_eq!(condition.status, "Unknown", "{}", condition.type_);
        assert_eq!(condition.reason.as_deref(), Some(REASON_UNKNOWN));
        assert_eq!(condition.message.as_deref(), Some(MESSAGE_UNKNOWN));
    }
    assert_eq!(sim.taints("node-1"), unreachable_both());
    // Marked within grace + one renewal + one tick of the kill.
    let tainted = sim.tainted_at("node-1").unwrap() - killed_at;
    assert!(
        tainted <= GRACE + Duration::from_secs(2) + TICK,
        "{tainted:?}"
    );
    // Each taint carries when it was added.
    let taints = sim.nodes["node-1"]
        .spec
        .as_ref()
        .unwrap()
        .taints
        .clone()
        .unwrap();
    assert!(taints.iter().all(|taint| taint.time_added.is_some()));
    // The others are untouched, and the mark is made once.
    for other in ["node-0", "node-2", "node-3"] {
        assert!(sim.taints(other).is_empty());
    }
    let marks = sim
        .log
        .iter()
        .filter(|(_, action)| matches!(action, Action::MarkUnknown { .. }))
        .count();
    assert_eq!(marks, 1);
}

#[test]
fn a_node_that_comes_back_loses_its_taints() {
    let mut sim = Sim::new(4, None);
    sim.kill("node-2");
    sim.run_for(Duration::from_secs(12));
    assert!(sim.evictable("node-2"));
    sim.revive("node-2");
    sim.run_for(Duration::from_secs(3));
    assert_eq!(ready_status(&sim.nodes["node-2"]), Some("True"));
    assert!(sim.taints("node-2").is_empty());
}

#[test]
fn a_node_reporting_not_ready_gets_the_not_ready_taints_and_then_unreachable() {
    let mut sim = Sim::new(4, None);
    sim.report("node-0", "False");
    sim.pass();
    assert_eq!(
        sim.taints("node-0"),
        vec![
            (NOT_READY.to_string(), "NoExecute".to_string()),
            (NOT_READY.to_string(), "NoSchedule".to_string()),
        ]
    );
    // Its agent dies: the mark follows the condition, without a token.
    sim.kill("node-0");
    let pass_count_before = sim.log.len();
    let mut elapsed = Duration::ZERO;
    while elapsed < Duration::from_secs(10) {
        sim.elapsed += TICK;
        elapsed += TICK;
        for name in ["node-1", "node-2", "node-3"] {
            sim.renew(name);
        }
        sim.pass();
    }
    assert!(sim.log.len() > pass_count_before);
    assert_eq!(sim.taints("node-0"), unreachable_both());
}

#[test]
fn a_new_leader_gives_every_node_a_grace_period_from_when_it_first_sees_it() {
    let mut sim = Sim::new(3, None);
    // Every lease is old: a restarted server's controller sees them for
    // the first time now.
    for name in ["node-0", "node-1", "node-2"] {
        sim.kill(name);
    }
    sim.elapsed += Duration::from_secs(300);
    let pass = sim.pass();
    assert!(pass.actions.is_empty(), "{:?}", pass.actions);
    // The agents are alive, in fact, and renew: nothing ever happens.
    for name in ["node-0", "node-1", "node-2"] {
        sim.revive(name);
    }
    sim.run_for(Duration::from_secs(30));
    assert!(sim.log.is_empty(), "{:?}", sim.log);
}

#[test]
fn a_flapping_node_is_marked_and_unmarked_without_fighting_itself() {
    let mut sim = Sim::new(4, None);
    for _ in 0..5 {
        sim.kill("node-3");
        sim.run_for(Duration::from_secs(11));
        assert!(sim.evictable("node-3"));
        assert_eq!(ready_status(&sim.nodes["node-3"]), Some("Unknown"));
        sim.revive("node-3");
        sim.run_for(Duration::from_secs(4));
        assert!(sim.taints("node-3").is_empty());
        assert_eq!(ready_status(&sim.nodes["node-3"]), Some("True"));
    }
    // Each outage is one mark and one pair of taint writes each way.
    let marks = sim
        .log
        .iter()
        .filter(|(_, action)| matches!(action, Action::MarkUnknown { .. }))
        .count();
    assert_eq!(marks, 5);
    let taint_writes = sim
        .log
        .iter()
        .filter(|(_, action)| matches!(action, Action::SetTaints { .. }))
        .count();
    assert_eq!(taint_writes, 10);
}

#[test]
fn a_late_renewal_within_the_grace_period_changes_nothing() {
    let mut sim = Sim::new(4, None);
    for _ in 0..10 {
        // At most 1.5 s since the last renewal, 4 s cut off, and up to
        // 1.5 s to the next: 7 s, under the grace period.
        sim.kill("node-1");
        sim.run_for(Duration::from_secs(4));
        sim.revive("node-1");
        sim.run_for(Duration::from_secs(2));
    }
    assert!(sim.log.is_empty(), "{:?}", sim.log);
}

#[test]
fn upstreams_zone_states() {
    assert_eq!(zone_state(5, 0), ZoneState::Normal);
    assert_eq!(zone_state(0, 1), ZoneState::FullDisruption);
    assert_eq!(zone_state(0, 0), ZoneState::Normal);
    // Two not Ready never make a partial disruption, whatever the share.
    assert_eq!(zone_state(1, 2), ZoneState::Normal);
    // Three and at least 55%.
    assert_eq!(zone_state(2, 3), ZoneState::PartialDisruption);
    assert_eq!(zone_state(3, 3), ZoneState::Normal);
    assert_eq!(zone_state(1, 3), ZoneState::PartialDisruption);
    assert_eq!(zone_state(45, 55), ZoneState::PartialDisruption);
    assert_eq!(zone_state(46, 54), ZoneState::Normal);
}

#[test]
fn the_rates_by_zone_state() {
    let normal = Rate::Unlimited;
    assert_eq!(
        zone_rate(ZoneState::Normal, 10, normal, false),
        Rate::Unlimited
    );
    assert_eq!(
        zone_rate(ZoneState::FullDisruption, 10, normal, false),
        Rate::Unlimited
    );
    assert_eq!(
        zone_rate(ZoneState::PartialDisruption, 10, normal, false),
        Rate::Stopped
    );
    assert_eq!(
        zone_rate(ZoneState::PartialDisruption, 50, normal, false),
        Rate::Stopped
    );
    assert_eq!(
        zone_rate(ZoneState::PartialDisruption, 51, normal, false),
        Rate::PerSecond(SECONDARY_EVICTION_RATE)
    );
    for state in [
        ZoneState::Normal,
        ZoneState::PartialDisruption,
        ZoneState::FullDisruption,
    ] {
        assert_eq!(zone_rate(state, 100, normal, true), Rate::Stopped);
    }
    assert_eq!(
        zone_rate(ZoneState::Normal, 10, Rate::PerSecond(0.1), false),
        Rate::PerSecond(0.1)
    );
}

#[test]
fn the_limiter_hands_out_tokens_at_its_rate() {
    let t0 = Instant::now();
    let mut limiter = Limiter::new(Rate::PerSecond(0.5), t0);
    assert!(limiter.try_take(t0), "a burst of one");
    assert!(!limiter.try_take(t0));
    assert!(!limiter.try_take(t0 + Duration::from_secs(1)));
    assert!(limiter.try_take(t0 + Duration::from_secs(2)));
    limiter.set_rate(Rate::Stopped, t0 + Duration::from_secs(3));
    assert!(!limiter.try_take(t0 + Duration::from_secs(100)));
    limiter.set_rate(Rate::Unlimited, t0 + Duration::from_secs(100));
    assert!((0..100).all(|_| limiter.try_take(t0 + Duration::from_secs(100))));
    // A new finite rate starts with an empty bucket.
    limiter.set_rate(Rate::PerSecond(1.0), t0 + Duration::from_secs(100));
    assert!(!limiter.try_take(t0 + Duration::from_secs(100)));
    assert!(limiter.try_take(t0 + Duration::from_secs(101)));
}

#[test]
fn a_partition_of_most_nodes_is_not_evicted() {
    // Five nodes; three are cut off together (their last renewals up to
    // one interval apart). None is marked for eviction: the zone is
    // partially disrupted and small, so evictions stop.
    let mut sim = Sim::new(5, None);
    sim.run_for(Duration::from_secs(5));
    for name in ["node-1", "node-2", "node-3"] {
        sim.kill(name);
    }
    sim.run_for(Duration::from_secs(30));
    for name in ["node-1", "node-2", "node-3"] {
        assert_eq!(ready_status(&sim.nodes[name]), Some("Unknown"));
        assert!(!sim.evictable(name), "{name} was marked for eviction");
        // Still kept from new pods.
        assert_eq!(
            sim.taints(name),
            vec![(UNREACHABLE.to_string(), "NoSchedule".to_string())]
        );
    }
    assert_eq!(sim.monitor.zone_states()[""], ZoneState::PartialDisruption);
    // Healed: everything is back, nothing was evicted.
    for name in ["node-1", "node-2", "node-3"] {
        sim.revive(name);
    }
    sim.run_for(Duration::from_secs(5));
    for name in ["node-1", "node-2", "node-3"] {
        assert!(sim.taints(name).is_empty());
    }
    assert_eq!(sim.monitor.zone_states()[""], ZoneState::Normal);
    assert!(sim.tainted_at("node-1").is_none());
}

#[test]
fn two_lost_nodes_of_four_are_evicted_at_once() {
    // Upstream's rule: two not Ready never brake.
    let mut sim = Sim::new(4, None);
    sim.kill("node-0");
    sim.kill("node-1");
    sim.run_for(Duration::from_secs(11));
    assert!(sim.evictable("node-0") && sim.evictable("node-1"));
}

#[test]
fn zones_are_judged_apart() {
    // Zone a loses 3 of 4 (braked); zone b loses 1 of 4 (evicted).
    let mut sim = Sim::new(0, None);
    for index in 0..4 {
        sim.add(&format!("a-{index}"), Some("a"));
        sim.add(&format!("b-{index}"), Some("b"));
    }
    for name in ["a-0", "a-1", "a-2", "b-0"] {
        sim.kill(name);
    }
    sim.run_for(Duration::from_secs(12));
    for name in ["a-0", "a-1", "a-2"] {
        assert!(!sim.evictable(name), "{name}");
    }
    assert!(sim.evictable("b-0"));
    let states = sim.monitor.zone_states();
    assert_eq!(states["a"], ZoneState::PartialDisruption);
    assert_eq!(states["b"], ZoneState::Normal);
}

#[test]
fn a_zone_fully_down_is_evicted_while_another_is_up() {
    let mut sim = Sim::new(0, None);
    for index in 0..3 {
        sim.add(&format!("a-{index}"), Some("a"));
        sim.add(&format!("b-{index}"), Some("b"));
    }
    for index in 0..3 {
        sim.kill(&format!("a-{index}"));
    }
    sim.run_for(Duration::from_secs(12));
    assert_eq!(sim.monitor.zone_states()["a"], ZoneState::FullDisruption);
    for index in 0..3 {
        assert!(sim.evictable(&format!("a-{index}")));
    }
}

#[test]
fn every_zone_down_stops_evictions_and_unmarks_the_nodes() {
    let mut sim = Sim::new(4, None);
    // One node is lost first and marked…
    sim.kill("node-0");
    sim.run_for(Duration::from_secs(11));
    assert!(sim.evictable("node-0"));
    // …then every other one goes silent (this server is cut off).
    for name in ["node-1", "node-2", "node-3"] {
        sim.kill(name);
    }
    sim.run_for(Duration::from_secs(12));
    for name in ["node-0", "node-1", "node-2", "node-3"] {
        assert!(!sim.evictable(name), "{name}");
    }
    assert_eq!(sim.monitor.zone_states()[""], ZoneState::FullDisruption);
    // Back: every node gets a grace period again before it is judged;
    // node-0, still dead, is marked again after it.
    for name in ["node-1", "node-2", "node-3"] {
        sim.revive(name);
    }
    sim.run_for(Duration::from_secs(1));
    assert!(!sim.evictable("node-0"));
    sim.run_for(Duration::from_secs(10));
    assert!(sim.evictable("node-0"));
    for name in ["node-1", "node-2", "node-3"] {
        assert!(!sim.evictable(name));
    }
}

#[test]
fn a_slow_normal_rate_marks_one_node_at_a_time() {
    let mut sim = Sim::with_config(
        10,
        None,
        LifecycleConfig {
            grace_period: GRACE,
            eviction_rate: Some(0.5),
        },
    );
    sim.kill("node-0");
    sim.kill("node-1");
    sim.run_for(Duration::from_secs(12));
    let first = sim
        .tainted_at("node-0")
        .or(sim.tainted_at("node-1"))
        .unwrap();
    let both: Vec<Duration> = ["node-0", "node-1"]
        .iter()
        .map(|name| sim.tainted_at(name).unwrap())
        .collect();
    let gap = both.iter().max().unwrap().saturating_sub(first);
    assert!(gap >= Duration::from_secs(2), "{gap:?}");
}

#[test]
fn restarting_at_any_step_converges_to_the_same_marks() {
    // A monitor restarted (a new leader) with a node already Unknown and
    // tainted, or Unknown and not yet tainted, or tainted NoSchedule
    // only, finishes the job after its own grace period, never undoes it
    // first.
    for step in 0..3 {
        let mut sim = Sim::new(4, None);
        sim.kill("node-1");
        sim.run_for(Duration::from_secs(11));
        let node = sim.nodes.get_mut("node-1").unwrap();
        match step {
            0 => {}
            1 => node.spec.as_mut().unwrap().taints = None,
            _ => {
                node.spec.as_mut().unwrap().taints = Some(vec![Taint {
                    key: UNREACHABLE.into(),
                    effect: "NoSchedule".into(),
                    value: None,
                    time_added: Some(wall(0.0)),
                }])
            }
        }
        sim.monitor = Monitor::new(LifecycleConfig {
            grace_period: GRACE,
            eviction_rate: None,
        });
        sim.log.clear();
        sim.run_for(Duration::from_secs(1));
        // Never undone first: a node already marked stays marked.
        if step == 0 {
            assert_eq!(sim.taints("node-1"), unreachable_both(), "step {step}");
        } else {
            assert!(
                !sim.evictable("node-1"),
                "step {step}: evicted before its grace period"
            );
        }
        sim.run_for(Duration::from_secs(11));
        assert_eq!(sim.taints("node-1"), unreachable_both(), "step {step}");
        assert!(
            sim.log
                .iter()
                .all(|(_, action)| !matches!(action, Action::MarkUnknown { .. })),
            "step {step}: already Unknown"
        );
    }
}

#[test]
fn unknown_conditions_add_the_missing_ones_as_never_updated() {
    let mut bare = node("n", None);
    bare.status = None;
    let conditions = unknown_conditions(&bare, &wall(1.0)).unwrap();
    assert_eq!(conditions.len(), CONDITIONS.len());
    assert!(
        conditions
            .iter()
            .all(|condition| condition.status == "Unknown"
                && condition.reason.as_deref() == Some(REASON_NEVER_UPDATED)
                && condition.message.as_deref() == Some(MESSAGE_NEVER_UPDATED))
    );
    let mut marked = bare.clone();
    marked.status = Some(NodeStatus {
        conditions: Some(conditions),
        ..NodeStatus::default()
    });
    assert_eq!(unknown_conditions(&marked, &wall(2.0)), None);
}

#[test]
fn other_taints_are_kept() {
    let mut tainted = node("n", None);
    tainted.spec.as_mut().unwrap().taints = Some(vec![Taint {
        key: "dedicated".into(),
        value: Some("gpu".into()),
        effect: "NoExecute".into(),
        time_added: None,
    }]);
    let taints =
        with_lifecycle_taints(&tainted, Some(UNREACHABLE), Some(UNREACHABLE), &wall(0.0)).unwrap();
    assert_eq!(taints.len(), 3);
    tainted.spec.as_mut().unwrap().taints = Some(taints);
    let cleared = with_lifecycle_taints(&tainted, None, None, &wall(1.0)).unwrap();
    assert_eq!(cleared.len(), 1);
    assert_eq!(cleared[0].key, "dedicated");
    // Asking for what it has is no write.
    assert_eq!(
        with_lifecycle_taints(&tainted, Some(UNREACHABLE), Some(UNREACHABLE), &wall(1.0)),
        None
    );
}

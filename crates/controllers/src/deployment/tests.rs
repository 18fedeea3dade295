//! Tests of the Deployment core: rollouts step by step (with a simulated
//! ReplicaSet controller that makes pods available), a sync cut short
//! after every one of its writes, proportional scaling, history cleanup,
//! pause, conditions and automatic rollback.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, ReplicaSet, ReplicaSetStatus,
    RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateWaiting, ContainerStatus, Pod, PodSpec, PodStatus,
    PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use super::core::{self, Action, DESIRED_REPLICAS, Input, MAX_REPLICAS, Plan, REVISION};
use super::hash::POD_TEMPLATE_HASH;
use super::progress::{self, PROGRESSING};
use super::rollback;
use super::rolling::{self, spec_replicas};

fn at(seconds: i64) -> Time {
    Time(Timestamp::from_second(1_800_000_000 + seconds).unwrap())
}

fn template(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some([("app".to_string(), "web".to_string())].into()),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "web".into(),
                image: Some(image.into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
    }
}

fn deployment(replicas: i32, image: &str) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("d-uid".into()),
            generation: Some(1),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some([("app".to_string(), "web".to_string())].into()),
                ..LabelSelector::default()
            },
            template: template(image),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".into())),
                    max_unavailable: Some(IntOrString::String("25%".into())),
                }),
            }),
            revision_history_limit: Some(10),
            progress_deadline_seconds: Some(600),
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

fn set_bounds(deployment: &mut Deployment, surge: IntOrString, unavailable: IntOrString) {
    let strategy = deployment.spec.as_mut().unwrap().strategy.as_mut().unwrap();
    strategy.rolling_update = Some(RollingUpdateDeployment {
        max_surge: Some(surge),
        max_unavailable: Some(unavailable),
    });
}

fn set_image(deployment: &mut Deployment, image: &str) {
    deployment.spec.as_mut().unwrap().template = template(image);
    let generation = deployment.metadata.generation.unwrap_or(1);
    deployment.metadata.generation = Some(generation + 1);
}

fn set_replicas(deployment: &mut Deployment, replicas: i32) {
    deployment.spec.as_mut().unwrap().replicas = Some(replicas);
    let generation = deployment.metadata.generation.unwrap_or(1);
    deployment.metadata.generation = Some(generation + 1);
}

/// A cluster as the core sees it: one Deployment, its ReplicaSets, time.
#[derive(Clone)]
struct World {
    deployment: Deployment,
    replica_sets: Vec<ReplicaSet>,
    pods: HashMap<String, Vec<Arc<Pod>>>,
    now: i64,
    next_uid: u32,
    events: Vec<String>,
}

impl World {
    fn new(deployment: Deployment) -> World {
        World {
            deployment,
            replica_sets: Vec::new(),
            pods: HashMap::new(),
            now: 0,
            next_uid: 0,
            events: Vec::new(),
        }
    }

    fn plan(&self) -> Plan {
        core::plan(Input {
            deployment: &self.deployment,
            replica_sets: self.replica_sets.clone(),
            pods: self.pods.clone(),
            now: at(self.now),
        })
    }

    fn find(&mut self, name: &str) -> Option<&mut ReplicaSet> {
        self.replica_sets
            .iter_mut()
            .find(|rs| rs.metadata.name.as_deref() == Some(name))
    }

    /// Performs the first `limit` actions, as the API server would.
    fn apply(&mut self, plan: &Plan, limit: usize) {
        for action in plan.actions.iter().take(limit) {
            match action.clone() {
                Action::Create {
                    mut replica_set,
                    event,
                } => {
                    let name = replica_set.metadata.name.clone().unwrap();
                    if self.find(&name).is_some() {
                        continue;
                    }
                    self.next_uid += 1;
                    replica_set.metadata.uid = Some(format!("rs-{}", self.next_uid));
                    replica_set.metadata.creation_timestamp = Some(at(self.now));
                    replica_set.metadata.generation = Some(1);
                    self.replica_sets.push(replica_set);
                    self.events.extend(event);
                }
                Action::Update { replica_set, event } => {
                    let name = replica_set.metadata.name.clone().unwrap();
                    let stored = self.find(&name).expect("updates an existing replica set");
                    let spec = stored.spec.as_mut().unwrap();
                    let new_spec = replica_set.spec.unwrap();
                    if spec.replicas != new_spec.replicas
                        || spec.min_ready_seconds != new_spec.min_ready_seconds
                    {
                        stored.metadata.generation =
                            Some(stored.metadata.generation.unwrap_or(1) + 1);
                    }
                    spec.replicas = new_spec.replicas;
                    spec.min_ready_seconds = new_spec.min_ready_seconds;
                    stored.metadata.annotations = replica_set.metadata.annotations;
                    self.events.extend(event);
                }
                Action::Delete { name, .. } => {
                    self.replica_sets
                        .retain(|rs| rs.metadata.name.as_deref() != Some(name.as_str()));
                }
                Action::Annotate(changes) => {
                    let annotations = self
                        .deployment
                        .metadata
                        .annotations
                        .get_or_insert_with(BTreeMap::new);
                    for (key, value) in changes {
                        match value {
                            Some(value) => annotations.insert(key, value),
                            None => annotations.remove(&key),
                        };
                    }
                }
                Action::RollBack {
                    template,
                    annotations,
                } => {
                    self.deployment.spec.as_mut().unwrap().template = template;
                    let own = self
                        .deployment
                        .metadata
                        .annotations
                        .get_or_insert_with(BTreeMap::new);
                    for (key, value) in annotations {
                        match value {
                            Some(value) => own.insert(key, value),
                            None => own.remove(&key),
                        };
                    }
                    let generation = self.deployment.metadata.generation.unwrap_or(1);
                    self.deployment.metadata.generation = Some(generation + 1);
                }
                Action::Status(status) => self.deployment.status = Some(status),
                Action::Event { reason, note, .. } => self.events.push(format!("{reason}: {note}")),
            }
        }
    }

    fn sync(&mut self) -> Plan {
        let plan = self.plan();
        self.apply(&plan, usize::MAX);
        plan
    }

    /// The ReplicaSet controller: every ReplicaSet's pods exist and, for
    /// those whose template is `healthy`, are available.
    fn settle(&mut self, healthy: impl Fn(&ReplicaSet) -> bool) {
        for rs in &mut self.replica_sets {
            let replicas = spec_replicas(rs);
            let available = if healthy(rs) { replicas } else { 0 };
            rs.status = Some(ReplicaSetStatus {
                replicas,
                ready_replicas: Some(available),
                available_replicas: Some(available),
                observed_generation: rs.metadata.generation,
                ..ReplicaSetStatus::default()
            });
        }
    }

    fn settle_all(&mut self) {
        self.settle(|_| true);
    }

    fn image_of(rs: &ReplicaSet) -> String {
        rs.spec
            .as_ref()
            .unwrap()
            .template
            .as_ref()
            .unwrap()
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .clone()
            .unwrap()
    }

    fn sizes(&self) -> BTreeMap<String, i32> {
        self.replica_sets
            .iter()
            .map(|rs| (World::image_of(rs), spec_replicas(rs)))
            .collect()
    }

    fn status(&self) -> k8s_openapi::api::apps::v1::DeploymentStatus {
        self.deployment.status.clone().unwrap_or_default()
    }

    fn progressing_reason(&self) -> Option<String> {
        progress::condition(&self.status(), PROGRESSING).and_then(|c| c.reason.clone())
    }

    /// Syncs and settles until nothing changes (at most `rounds`),
    /// checking the rollout's bounds on every step.
    fn converge(&mut self, rounds: usize) -> usize {
        for round in 0..rounds {
            self.settle_all();
            let plan = self.sync();
            check_bounds(self);
            self.settle_all();
            self.now += 1;
            if plan.actions.is_empty() {
                return round;
            }
        }
        panic!("no convergence in {rounds} rounds: {:?}", self.sizes());
    }
}

/// maxSurge: never more pods asked for than desired + surge; maxUnavailable:
/// never fewer available than desired - unavailable once it was reached.
fn check_bounds(world: &World) {
    let deployment = &world.deployment;
    let desired = rolling::desired_replicas(deployment);
    let total: i32 = world.replica_sets.iter().map(spec_replicas).sum();
    let surge = rolling::max_surge(deployment);
    assert!(
        total <= desired + surge,
        "{total} pods asked for, bound {}: {:?}",
        desired + surge,
        world.sizes()
    );
}

fn complete(world: &World) -> bool {
    progress::deployment_complete(&world.deployment, &world.status())
}

#[test]
fn a_new_deployment_creates_its_replica_set_and_completes() {
    let mut world = World::new(deployment(3, "busybox:1"));
    let plan = world.sync();
    let Action::Create { replica_set, event } = &plan.actions[0] else {
        panic!("first a create: {:?}", plan.actions);
    };
    let hash = replica_set.metadata.labels.as_ref().unwrap()[POD_TEMPLATE_HASH].clone();
    assert_eq!(
        replica_set.metadata.name.as_deref(),
        Some(format!("web-{hash}").as_str())
    );
    let spec = replica_set.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(
        spec.selector.match_labels.as_ref().unwrap()[POD_TEMPLATE_HASH],
        hash
    );
    let template_labels = spec
        .template
        .as_ref()
        .unwrap()
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_eq!(template_labels[POD_TEMPLATE_HASH], hash);
    assert_eq!(template_labels["app"], "web");
    let annotations = replica_set.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations[REVISION], "1");
    assert_eq!(annotations[DESIRED_REPLICAS], "3");
    assert_eq!(annotations[MAX_REPLICAS], "4");
    let owner = &replica_set.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Deployment", "d-uid", Some(true))
    );
    assert_eq!(
        event.as_deref(),
        Some(format!("Scaled up replica set web-{hash} from 0 to 3").as_str())
    );
    assert_eq!(
        world.deployment.metadata.annotations.as_ref().unwrap()[REVISION],
        "1"
    );
    assert_eq!(
        world.progressing_reason().as_deref(),
        Some(progress::NEW_RS_CREATED)
    );
    let available = progress::condition(&world.status(), progress::AVAILABLE)
        .unwrap()
        .clone();
    assert_eq!(
        available.reason.as_deref(),
        Some(progress::MINIMUM_UNAVAILABLE)
    );

    world.settle_all();
    world.now += 1;
    world.sync();
    let status = world.status();
    assert_eq!(
        (
            status.replicas,
            status.updated_replicas,
            status.ready_replicas,
            status.available_replicas,
            status.unavailable_replicas
        ),
        (Some(3), Some(3), Some(3), Some(3), Some(0))
    );
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(
        world.progressing_reason().as_deref(),
        Some(progress::NEW_RS_AVAILABLE)
    );
    let message = progress::condition(&status, PROGRESSING)
        .unwrap()
        .message
        .clone()
        .unwrap();
    assert_eq!(
        message,
        format!("ReplicaSet \"web-{hash}\" has successfully progressed.")
    );
    assert_eq!(
        progress::condition(&status, progress::AVAILABLE)
            .unwrap()
            .reason
            .as_deref(),
        Some(progress::MINIMUM_AVAILABLE)
    );
    assert!(
        world.plan().actions.is_empty(),
        "a settled deployment needs nothing"
    );
}

#[test]
fn a_rolling_update_respects_surge_and_unavailability_at_every_step() {
    let mut world = World::new(deployment(10, "busybox:1"));
    world.converge(10);
    set_image(&mut world.deployment, "busybox:2");
    // Availability lags one step behind the scale (pods need a sync to be
    // ready), so the minimum holds on what the ReplicaSets report.
    let mut steps = 0;
    loop {
        let plan = world.sync();
        check_bounds(&world);
        let available: i32 = world
            .replica_sets
            .iter()
            .map(rolling::available_replicas)
            .sum();
        let asked_old: i32 = world
            .replica_sets
            .iter()
            .filter(|rs| World::image_of(rs) == "busybox:1")
            .map(spec_replicas)
            .sum();
        let available_new: i32 = world
            .replica_sets
            .iter()
            .filter(|rs| World::image_of(rs) == "busybox:2")
            .map(rolling::available_replicas)
            .sum();
        assert!(
            asked_old + available_new >= 8,
            "at most 25% (2) unavailable: {:?} (available {available})",
            world.sizes()
        );
        world.settle_all();
        world.now += 1;
        steps += 1;
        if plan.actions.is_empty() || steps > 20 {
            break;
        }
    }
    assert!(complete(&world), "{:?}", world.sizes());
    assert_eq!(
        world.sizes(),
        BTreeMap::from([("busybox:1".to_string(), 0), ("busybox:2".to_string(), 10)])
    );
    assert_eq!(
        world.deployment.metadata.annotations.as_ref().unwrap()[REVISION],
        "2"
    );
    assert!(
        world
            .events
            .iter()
            .any(|event| event.starts_with("Scaled down replica set web-")
                && event.ends_with("from 10 to 8")),
        "{:?}",
        world.events
    );
    assert!(
        world
            .events
            .iter()
            .any(|event| event.starts_with("Scaled up replica set web-")
                && event.ends_with("from 0 to 3")),
        "{:?}",
        world.events
    );
}

#[test]
fn a_sync_cut_short_after_any_write_is_finished_by_the_next() {
    // For every step of a rollout and every prefix of its plan: apply the
    // prefix, then sync again from there; the rollout must end where an
    // uninterrupted one ends, within its bounds all the way.
    let mut reference = World::new(deployment(7, "busybox:1"));
    set_bounds(
        &mut reference.deployment,
        IntOrString::Int(2),
        IntOrString::Int(1),
    );
    reference.converge(10);
    set_image(&mut reference.deployment, "busybox:2");
    let mut cuts = 0;
    for _step in 0..30 {
        let plan = reference.plan();
        if plan.actions.is_empty() {
            break;
        }
        for limit in 0..plan.actions.len() {
            let mut cut = reference.clone();
            cut.apply(&plan, limit);
            check_bounds(&cut);
            cut.converge(40);
            assert!(complete(&cut), "cut after {limit}: {:?}", cut.sizes());
            assert_eq!(cut.sizes().get("busybox:2"), Some(&7));
            assert_eq!(cut.sizes().get("busybox:1"), Some(&0));
            assert_eq!(
                cut.deployment.metadata.annotations.as_ref().unwrap()[REVISION],
                "2"
            );
            cuts += 1;
        }
        reference.apply(&plan, usize::MAX);
        reference.settle_all();
        reference.now += 1;
    }
    assert!(complete(&reference));
    assert!(cuts > 5, "the rollout has several writes to cut ({cuts})");
}

#[test]
fn recreate_scales_the_old_down_and_waits_for_its_pods() {
    let mut deployment = deployment(3, "busybox:1");
    deployment.spec.as_mut().unwrap().strategy = Some(DeploymentStrategy {
        type_: Some("Recreate".into()),
        rolling_update: None,
    });
    let mut world = World::new(deployment);
    world.converge(10);
    set_image(&mut world.deployment, "busybox:2");
    world.sync();
    assert_eq!(
        world.sizes(),
        BTreeMap::from([("busybox:1".to_string(), 0)]),
        "old down first, no new yet"
    );
    // The old ReplicaSet's pods are still terminating.
    let old_uid = world.replica_sets[0].metadata.uid.clone().unwrap();
    world.pods.insert(
        old_uid.clone(),
        vec![Arc::new(Pod {
            status: Some(PodStatus {
                phase: Some("Running".into()),
                ..PodStatus::default()
            }),
            ..Pod::default()
        })],
    );
    world.settle_all();
    world.sync();
    assert_eq!(
        world.replica_sets.len(),
        1,
        "no new pods while old ones run"
    );
    world.pods.remove(&old_uid);
    world.sync();
    assert_eq!(world.sizes().get("busybox:2"), Some(&3));
    world.converge(10);
    assert!(complete(&world), "{:?} {:?}", world.sizes(), world.status());
}

#[test]
fn scaling_during_a_rollout_is_proportional() {
    // Upstream's example: 10 replicas, maxSurge 3, mid-rollout with 8 old
    // and 5 new, scaled to 15: the 5 more split by share (3 old, 2 new).
    let mut deployment = deployment(10, "busybox:1");
    set_bounds(&mut deployment, IntOrString::Int(3), IntOrString::Int(2));
    let mut world = World::new(deployment);
    world.converge(10);
    set_image(&mut world.deployment, "busybox:2");
    // As upstream: the new one is created at the surge, and the old one
    // loses what is above the minimum in the same sync.
    world.sync();
    assert_eq!(
        world.sizes(),
        BTreeMap::from([("busybox:1".to_string(), 8), ("busybox:2".to_string(), 3)])
    );
    world.settle(|rs| World::image_of(rs) == "busybox:1");
    world.sync();
    assert_eq!(
        world.sizes(),
        BTreeMap::from([("busybox:1".to_string(), 8), ("busybox:2".to_string(), 5)])
    );
    set_replicas(&mut world.deployment, 15);
    let plan = world.sync();
    // 15 + 3 surge = 18 allowed, 13 asked: 8*18/13 = 11.08 → 11 (+3);
    // 5*18/13 = 6.9 → 7, capped at what is left (+2).
    assert_eq!(
        world.sizes(),
        BTreeMap::from([("busybox:1".to_string(), 11), ("busybox:2".to_string(), 7)]),
        "{plan:?}"
    );
    for rs in &world.replica_sets {
        let annotations = rs.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            (
                annotations[DESIRED_REPLICAS].as_str(),
                annotations[MAX_REPLICAS].as_str()
            ),
            ("15", "18")
        );
    }
    // And down to 5: 5 + 2 (25% rounds up) = ... surge is 3: 8 allowed.
    set_replicas(&mut world.deployment, 5);
    world.sync();
    let total: i32 = world.sizes().values().sum();
    assert_eq!(total, 8, "{:?}", world.sizes());
    world.converge(40);
    assert!(complete(&world));
    assert_eq!(world.sizes().get("busybox:2"), Some(&5));
}

#[test]
fn scaling_a_settled_deployment_scales_its_one_replica_set() {
    let mut world = World::new(deployment(3, "busybox:1"));
    world.converge(10);
    set_replicas(&mut world.deployment, 1000);
    world.sync();
    assert_eq!(world.sizes().get("busybox:1"), Some(&1000));
    assert!(world.events.last().unwrap().ends_with("from 3 to 1000"));
    set_replicas(&mut world.deployment, 0);
    world.sync();
    assert_eq!(world.sizes().get("busybox:1"), Some(&0));
    assert!(
        world
            .events
            .last()
            .unwrap()
            .starts_with("Scaled down replica set")
    );
}

#[test]
fn old_replica_sets_beyond_the_history_limit_are_deleted() {
    let mut deployment = deployment(2, "image:0");
    deployment.spec.as_mut().unwrap().revision_history_limit = Some(2);
    let mut world = World::new(deployment);
    world.converge(10);
    for version in 1..=5 {
        set_image(&mut world.deployment, &format!("image:{version}"));
        world.converge(20);
        assert!(complete(&world));
    }
    let mut images: Vec<String> = world.replica_sets.iter().map(World::image_of).collect();
    images.sort();
    assert_eq!(
        images,
        ["image:3", "image:4", "image:5"],
        "the new one and two old"
    );
    let mut revisions: Vec<i64> = world
        .replica_sets
        .iter()
        .map(|rs| core::revision(&rs.metadata))
        .collect();
    revisions.sort();
    assert_eq!(revisions, [4, 5, 6]);
}

#[test]
fn going_back_to_an_old_template_reuses_its_replica_set_with_a_new_revision() {
    let mut world = World::new(deployment(2, "busybox:1"));
    world.converge(10);
    set_image(&mut world.deployment, "busybox:2");
    world.converge(20);
    set_image(&mut world.deployment, "busybox:3");
    world.converge(20);
    // `kubectl rollout undo --to-revision=1`.
    set_image(&mut world.deployment, "busybox:1");
    world.converge(20);
    assert_eq!(world.replica_sets.len(), 3, "no new replica set");
    let first = world
        .replica_sets
        .iter()
        .find(|rs| World::image_of(rs) == "busybox:1")
        .unwrap();
    let annotations = first.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations[REVISION], "4");
    assert_eq!(annotations[core::REVISION_HISTORY], "1");
    assert_eq!(
        world.deployment.metadata.annotations.as_ref().unwrap()[REVISION],
        "4"
    );
    set_image(&mut world.deployment, "busybox:2");
    world.converge(20);
    let second = world
        .replica_sets
        .iter()
        .find(|rs| World::image_of(rs) == "busybox:2")
        .unwrap();
    assert_eq!(
        second.metadata.annotations.as_ref().unwrap()[core::REVISION_HISTORY],
        "2"
    );
    assert_eq!(second.metadata.annotations.as_ref().unwrap()[REVISION], "5");
}

#[test]
fn change_cause_is_copied_to_the_new_replica_set() {
    let mut deployment = deployment(1, "busybox:1");
    deployment.metadata.annotations = Some(
        [
            (core::CHANGE_CAUSE.to_string(), "first".to_string()),
            (
                "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                "{}".to_string(),
            ),
        ]
        .into(),
    );
    let mut world = World::new(deployment);
    world.converge(10);
    let annotations = world.replica_sets[0].metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations[core::CHANGE_CAUSE], "first");
    assert!(!annotations.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
}

#[test]
fn a_paused_deployment_scales_but_does_not_roll_out() {
    let mut world = World::new(deployment(4, "busybox:1"));
    world.converge(10);
    world.deployment.spec.as_mut().unwrap().paused = Some(true);
    world.sync();
    assert_eq!(
        world.progressing_reason().as_deref(),
        Some(progress::PAUSED)
    );
    let paused = progress::condition(&world.status(), PROGRESSING)
        .unwrap()
        .clone();
    assert_eq!(
        (paused.status.as_str(), paused.message.as_deref()),
        ("Unknown", Some("Deployment is paused"))
    );
    set_image(&mut world.deployment, "busybox:2");
    set_replicas(&mut world.deployment, 6);
    world.converge(10);
    assert_eq!(
        world.sizes(),
        BTreeMap::from([("busybox:1".to_string(), 6)])
    );
    assert_eq!(
        world.status().observed_generation,
        world.deployment.metadata.generation
    );
    world.deployment.spec.as_mut().unwrap().paused = Some(false);
    world.sync();
    assert!(world.replica_sets.len() == 2, "resumed: the rollout starts");
    world.converge(20);
    assert!(complete(&world));
    assert_eq!(
        world.progressing_reason().as_deref(),
        Some(progress::NEW_RS_AVAILABLE)
    );
}

#[test]
fn a_stalled_rollout_passes_its_deadline() {
    let mut deployment = deployment(3, "busybox:1");
    deployment.spec.as_mut().unwrap().progress_deadline_seconds = Some(10);
    let mut world = World::new(deployment);
    world.converge(10);
    set_image(&mut world.deployment, "missing:1");
    let healthy = |rs: &ReplicaSet| World::image_of(rs) == "busybox:1";
    let plan = world.sync();
    assert!(plan.recheck_after.is_some(), "a deadline to check");
    world.settle(healthy);
    for _ in 0..5 {
        world.now += 3;
        world.sync();
        world.settle(healthy);
    }
    assert_eq!(
        world.progressing_reason().as_deref(),
        Some(progress::TIMED_OUT)
    );
    let condition = progress::condition(&world.status(), PROGRESSING)
        .unwrap()
        .clone();
    assert_eq!(condition.status, "False");
    assert!(
        condition
            .message
            .as_deref()
            .unwrap()
            .ends_with("has timed out progressing.")
    );
    // Old pods keep serving: at most maxUnavailable (0 of 3 at 25%) lost.
    assert_eq!(world.sizes().get("busybox:1"), Some(&3));
    // Without auto-rollback nothing else happens.
    assert!(world.deployment.spec.as_ref().unwrap().template == template("missing:1"));
}

fn waiting_pod(reason: &str) -> Arc<Pod> {
    let mut pod = (*crash_looping_pod()).clone();
    let statuses = pod
        .status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap();
    statuses[0].restart_count = 0;
    statuses[0].image = "busybox:nope".into();
    statuses[0]
        .state
        .as_mut()
        .unwrap()
        .waiting
        .as_mut()
        .unwrap()
        .reason = Some(reason.into());
    Arc::new(pod)
}

#[test]
fn an_image_that_cannot_be_pulled_is_rolled_back_without_waiting_for_the_deadline() {
    let mut deployment = auto_rollback_deployment();
    // A deadline far away: the rollback must not be the deadline's.
    deployment.spec.as_mut().unwrap().progress_deadline_seconds = Some(600);
    let mut world = World::new(deployment);
    world.converge(10);
    set_image(&mut world.deployment, "busybox:nope");
    world.sync();
    let new_uid = world
        .replica_sets
        .iter()
        .find(|rs| World::image_of(rs) == "busybox:nope")
        .and_then(|rs| rs.metadata.uid.clone())
        .unwrap();
    // A first failed pull is not yet a failure; the back-off after it is.
    world
        .pods
        .insert(new_uid.clone(), vec![waiting_pod("ErrImagePull")]);
    world.now += 1;
    let plan = world.sync();
    assert!(
        !plan
            .actions
            .iter()
            .any(|action| matches!(action, Action::RollBack { .. })),
        "one failed pull is not a failed rollout: {plan:?}"
    );
    world
        .pods
        .insert(new_uid, vec![waiting_pod("ImagePullBackOff")]);
    world.now += 1;
    let plan = world.sync();
    assert!(
        plan.actions
            .iter()
            .any(|action| matches!(action, Action::RollBack { .. })),
        "{plan:?}"
    );
    let condition = progress::condition(&world.status(), rollback::ROLLED_BACK)
        .unwrap()
        .clone();
    assert_eq!(condition.reason.as_deref(), Some(rollback::REASON_IMAGE));
    assert!(
        condition
            .message
            .as_deref()
            .unwrap()
            .contains("busybox:nope")
    );
    world.converge(20);
    assert!(complete(&world));
    assert_eq!(
        world.deployment.spec.as_ref().unwrap().template,
        template("busybox:1")
    );
}

fn crash_looping_pod() -> Arc<Pod> {
    Arc::new(Pod {
        metadata: ObjectMeta {
            name: Some("web-x-1".into()),
            ..ObjectMeta::default()
        },
        status: Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: "web".into(),
                restart_count: 1,
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("CrashLoopBackOff".into()),
                        ..ContainerStateWaiting::default()
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        }),
        ..Pod::default()
    })
}

fn auto_rollback_deployment() -> Deployment {
    let mut deployment = deployment(3, "busybox:1");
    deployment.metadata.annotations =
        Some([(rollback::AUTO_ROLLBACK.to_string(), "true".to_string())].into());
    deployment.spec.as_mut().unwrap().progress_deadline_seconds = Some(10);
    deployment
}

#[test]
fn auto_rollback_goes_back_when_the_deadline_passes() {
    let mut world = World::new(auto_rollback_deployment());
    world.converge(10);
    let good = world.replica_sets[0].clone();
    assert!(
        rollback::is_fully_available(&good),
        "a completed rollout marks its replica set"
    );
    set_image(&mut world.deployment, "missing:1");
    let healthy = |rs: &ReplicaSet| World::image_of(rs) != "missing:1";
    world.sync();
    world.settle(healthy);
    let failed_hash = world
        .replica_sets
        .iter()
        .find(|rs| World::image_of(rs) == "missing:1")
        .map(|rs| rollback::template_hash_of(rs).unwrap().to_string())
        .unwrap();
    let mut rolled_back = None;
    for _ in 0..10 {
        world.now += 3;
        let plan = world.sync();
        world.settle(healthy);
        if plan
            .actions
            .iter()
            .any(|action| matches!(action, Action::RollBack { .. }))
        {
            rolled_back = Some(plan);
            break;
        }
    }
    assert!(rolled_back.is_some(), "rolled back after the deadline");
    assert_eq!(
        world.deployment.spec.as_ref().unwrap().template,
        template("busybox:1"),
        "the template minus its hash label"
    );
    let annotations = world.deployment.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations[rollback::FAILED_REVISION_HASH], failed_hash);
    assert_eq!(annotations[rollback::AUTO_ROLLBACK], "true");
    let condition = progress::condition(&world.status(), rollback::ROLLED_BACK)
        .unwrap()
        .clone();
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_deref()),
        ("True", Some(rollback::REASON_DEADLINE))
    );
    assert!(
        condition
            .message
            .as_deref()
            .unwrap()
            .starts_with("Rolled back from revision 2 (replica set web-")
    );
    assert_eq!(
        world.progressing_reason().as_deref(),
        Some(rollback::PROGRESSING_REASON)
    );
    assert!(
        world
            .events
            .iter()
            .any(|event| event.starts_with("RolledBack: Rolled back from revision 2")),
        "{:?}",
        world.events
    );
    world.converge(20);
    assert!(complete(&world));
    assert_eq!(
        world.sizes(),
        BTreeMap::from([("busybox:1".to_string(), 3), ("missing:1".to_string(), 0)])
    );
    assert_eq!(
        world.deployment.metadata.annotations.as_ref().unwrap()[REVISION],
        "3"
    );
    assert!(
        progress::condition(&world.status(), rollback::ROLLED_BACK).is_some(),
        "kept until the next rollout"
    );

    // The same bad template again is not rolled out.
    set_image(&mut world.deployment, "missing:1");
    world.converge(10);
    assert_eq!(
        world.sizes(),
        BTreeMap::from([("busybox:1".to_string(), 3), ("missing:1".to_string(), 0)])
    );
    assert_eq!(
        world.progressing_reason().as_deref(),
        Some("RolloutBlocked")
    );
    // Another template is, and starts afresh.
    set_image(&mut world.deployment, "busybox:2");
    world.converge(20);
    assert!(complete(&world));
    assert_eq!(world.sizes().get("busybox:2"), Some(&3));
    assert!(progress::condition(&world.status(), rollback::ROLLED_BACK).is_none());
}

#[test]
fn auto_rollback_goes_back_when_new_pods_crash_loop() {
    let mut world = World::new(auto_rollback_deployment());
    world
        .deployment
        .spec
        .as_mut()
        .unwrap()
        .progress_deadline_seconds = Some(600);
    world.converge(10);
    set_image(&mut world.deployment, "busybox:crash");
    world.sync();
    world.settle(|rs| World::image_of(rs) == "busybox:1");
    let new_uid = world
        .replica_sets
        .iter()
        .find(|rs| World::image_of(rs) == "busybox:crash")
        .and_then(|rs| rs.metadata.uid.clone())
        .unwrap();
    world.now += 1;
    let plan = world.sync();
    assert!(
        !plan
            .actions
            .iter()
            .any(|action| matches!(action, Action::RollBack { .. })),
        "healthy so far"
    );
    world.pods.insert(new_uid, vec![crash_looping_pod()]);
    let plan = world.sync();
    assert!(
        plan.actions
            .iter()
            .any(|action| matches!(action, Action::RollBack { .. })),
        "{plan:?}"
    );
    let condition = progress::condition(&world.status(), rollback::ROLLED_BACK)
        .unwrap()
        .clone();
    assert_eq!(
        condition.reason.as_deref(),
        Some(rollback::REASON_CRASH_LOOP)
    );
    assert!(
        condition
            .message
            .as_deref()
            .unwrap()
            .contains("CrashLoopBackOff")
    );
    world.converge(20);
    assert!(complete(&world));
}

#[test]
fn without_the_annotation_or_a_good_revision_there_is_no_rollback() {
    // Off: a crash loop is only what the status shows.
    let mut world = World::new(deployment(2, "busybox:1"));
    world.converge(10);
    assert!(
        !rollback::is_fully_available(&world.replica_sets[0]),
        "no marks when off"
    );
    set_image(&mut world.deployment, "busybox:crash");
    world.sync();
    let uid = world.replica_sets[1].metadata.uid.clone().unwrap();
    world.pods.insert(uid, vec![crash_looping_pod()]);
    let plan = world.sync();
    assert!(
        !plan
            .actions
            .iter()
            .any(|action| matches!(action, Action::RollBack { .. }))
    );
    // On, but the first rollout fails: nothing to go back to.
    let mut world = World::new(auto_rollback_deployment());
    world.deployment.spec.as_mut().unwrap().template = template("busybox:crash");
    world.sync();
    let uid = world.replica_sets[0].metadata.uid.clone().unwrap();
    world.pods.insert(uid, vec![crash_looping_pod()]);
    let plan = world.sync();
    assert!(
        !plan
            .actions
            .iter()
            .any(|action| matches!(action, Action::RollBack { .. }))
    );
}

#[test]
fn a_restart_counts_as_a_crash_loop_at_three() {
    let mut pod = (*crash_looping_pod()).clone();
    let status = &mut pod
        .status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap()[0];
    status.state = None;
    status.restart_count = 2;
    let deployment = auto_rollback_deployment();
    let replica_set = ReplicaSet::default();
    let now = at(0);
    let healthy = k8s_openapi::api::apps::v1::DeploymentStatus::default();
    assert_eq!(
        rollback::failure(
            &deployment,
            &healthy,
            &replica_set,
            &[Arc::new(pod.clone())],
            &now
        ),
        None
    );
    pod.status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap()[0]
        .restart_count = 3;
    let failure =
        rollback::failure(&deployment, &healthy, &replica_set, &[Arc::new(pod)], &now).unwrap();
    assert_eq!(failure.reason, rollback::REASON_RESTARTS);
}

#[test]
fn a_pod_not_ready_past_the_deadline_fails_the_rollout() {
    let deployment = auto_rollback_deployment();
    let pod = Arc::new(Pod {
        metadata: ObjectMeta {
            name: Some("p".into()),
            creation_timestamp: Some(at(0)),
            ..ObjectMeta::default()
        },
        status: Some(PodStatus {
            phase: Some("Running".into()),
            ..PodStatus::default()
        }),
        ..Pod::default()
    });
    let status = k8s_openapi::api::apps::v1::DeploymentStatus::default();
    let replica_set = ReplicaSet::default();
    assert_eq!(
        rollback::failure(
            &deployment,
            &status,
            &replica_set,
            std::slice::from_ref(&pod),
            &at(10)
        ),
        None
    );
    let failure = rollback::failure(&deployment, &status, &replica_set, &[pod], &at(11)).unwrap();
    assert_eq!(failure.reason, rollback::REASON_NOT_READY);
}

#[test]
fn an_orphan_selector_that_selects_everything_is_refused() {
    let mut deployment = deployment(1, "busybox:1");
    deployment.spec.as_mut().unwrap().selector = LabelSelector::default();
    let world = World::new(deployment);
    let plan = world.plan();
    assert!(matches!(
        &plan.actions[0],
        Action::Event {
            reason: "SelectingAll",
            ..
        }
    ));
    assert!(
        !plan
            .actions
            .iter()
            .any(|action| matches!(action, Action::Create { .. }))
    );
}

#[test]
fn min_ready_seconds_follows_the_deployment() {
    let mut world = World::new(deployment(1, "busybox:1"));
    world.converge(10);
    world.deployment.spec.as_mut().unwrap().min_ready_seconds = Some(5);
    world.sync();
    assert_eq!(
        world.replica_sets[0]
            .spec
            .as_ref()
            .unwrap()
            .min_ready_seconds,
        Some(5)
    );
}

#[test]
fn a_thousand_replica_rollout_takes_a_handful_of_steps() {
    let mut world = World::new(deployment(1000, "busybox:1"));
    world.converge(10);
    set_image(&mut world.deployment, "busybox:2");
    let rounds = world.converge(40);
    assert!(complete(&world));
    assert!(rounds <= 12, "{rounds} rounds");
}

#[test]
fn a_recreate_cut_short_after_any_write_is_finished_by_the_next() {
    let mut deployment = deployment(4, "busybox:1");
    deployment.spec.as_mut().unwrap().strategy = Some(DeploymentStrategy {
        type_: Some("Recreate".into()),
        rolling_update: None,
    });
    let mut reference = World::new(deployment);
    reference.converge(10);
    set_image(&mut reference.deployment, "busybox:2");
    for _step in 0..10 {
        let plan = reference.plan();
        if plan.actions.is_empty() {
            break;
        }
        for limit in 0..plan.actions.len() {
            let mut cut = reference.clone();
            cut.apply(&plan, limit);
            // Recreate never asks for new pods while old ones exist.
            let new_asked = cut
                .replica_sets
                .iter()
                .any(|rs| World::image_of(rs) == "busybox:2" && spec_replicas(rs) > 0);
            let old_exist = cut
                .replica_sets
                .iter()
                .any(|rs| World::image_of(rs) == "busybox:1" && rolling::status_replicas(rs) > 0);
            assert!(
                !(new_asked && old_exist),
                "cut after {limit}: {:?}",
                cut.sizes()
            );
            cut.converge(20);
            assert!(complete(&cut), "cut after {limit}: {:?}", cut.sizes());
            assert_eq!(cut.sizes().get("busybox:2"), Some(&4));
        }
        reference.apply(&plan, usize::MAX);
        reference.settle_all();
        reference.now += 1;
    }
    assert!(complete(&reference));
}

#[test]
fn an_automatic_rollback_cut_short_does_not_roll_back_twice() {
    let mut world = World::new(auto_rollback_deployment());
    world.converge(10);
    set_image(&mut world.deployment, "busybox:crash");
    world.sync();
    world.settle(|rs| World::image_of(rs) == "busybox:1");
    let uid = world
        .replica_sets
        .iter()
        .find(|rs| World::image_of(rs) == "busybox:crash")
        .and_then(|rs| rs.metadata.uid.clone())
        .unwrap();
    world.pods.insert(uid, vec![crash_looping_pod()]);
    let plan = world.plan();
    let rollback_at = plan
        .actions
        .iter()
        .position(|action| matches!(action, Action::RollBack { .. }))
        .expect("a rollback");
    // Only the template was written: the next sync carries on from there.
    world.apply(&plan, rollback_at + 1);
    assert_eq!(
        world.deployment.spec.as_ref().unwrap().template,
        template("busybox:1")
    );
    for _ in 0..20 {
        world.settle_all();
        let plan = world.sync();
        assert!(
            !plan
                .actions
                .iter()
                .any(|action| matches!(action, Action::RollBack { .. })),
            "no second rollback: {plan:?}"
        );
        world.now += 1;
    }
    assert!(complete(&world));
    assert_eq!(
        world.sizes(),
        BTreeMap::from([
            ("busybox:1".to_string(), 3),
            ("busybox:crash".to_string(), 0)
        ])
    );
}

//! Tests of the Deployment core: rollouts step by step (with a simulated
//! ReplicaSet controller that makes pods available), a sync cut short
//! after every one of its writes, proportional scaling, history cleanup,
//! pause, conditions and automatic rollback.

mod auto_rollback;
mod rollout;
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

//! A pod's status as kubelet reports it, from what its worker knows: the
//! phase (kubelet's rules), the conditions, addresses, and each
//! container's state, last state, readiness and restart count.

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, PodCondition, PodIP, PodStatus,
};
use runtime::pod::{ContainerId, ContainerStatus as RuntimeStatus};

use super::worker::{Worker, now, time_of};

impl Worker {
    pub(super) fn container_status(&self, container: &Container, init: bool) -> ContainerStatus {
        let run = self.runs.get(&container.name);
        let waiting = |reason: &str, message: Option<String>| ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.to_string()),
                message,
            }),
            ..ContainerState::default()
        };
        let mut ready = false;
        let mut started = false;
        let state = match run {
            None => waiting(
                if init {
                    "PodInitializing"
                } else {
                    "ContainerCreating"
                },
                None,
            ),
            Some(run) => match (&run.waiting, &run.status) {
                (Some((reason, message)), _) => waiting(reason, Some(message.clone())),
                (None, Some(RuntimeStatus::Running { started_at, .. })) => {
                    started = run.startup.as_ref().is_none_or(|s| s.verdict == Some(true));
                    ready = !init
                        && started
                        && match &run.readiness {
                            Some(state) => state.verdict == Some(true),
                            None => true,
                        };
                    ContainerState {
                        running: Some(ContainerStateRunning {
                            started_at: Some(time_of(*started_at)),
                        }),
                        ..ContainerState::default()
                    }
                }
                (None, Some(exited @ RuntimeStatus::Exited { .. })) => ContainerState {
                    terminated: run
                        .id
                        .as_ref()
                        .and_then(|id| terminated_of(id, Some(exited))),
                    ..ContainerState::default()
                },
                (None, Some(RuntimeStatus::Created)) | (None, None) => waiting(
                    if init {
                        "PodInitializing"
                    } else {
                        "ContainerCreating"
                    },
                    None,
                ),
            },
        };
        ContainerStatus {
            name: container.name.clone(),
            image: container.image.clone().unwrap_or_default(),
            image_id: run
                .and_then(|run| run.image.as_ref())
                .map(|image| image.id.clone())
                .unwrap_or_default(),
            container_id: run
                .and_then(|run| run.id.as_ref())
                .map(|id| format!("shoal://{id}")),
            ready,
            started: Some(started),
            restart_count: run.map(|run| run.attempt as i32).unwrap_or(0),
            state: Some(state),
            last_state: Some(ContainerState {
                // Waiting to restart: the instance that exited is the last
                // state; once restarted, the one before.
                terminated: run.and_then(|run| match (&run.waiting, &run.status, &run.id) {
                    (Some(_), Some(exited @ RuntimeStatus::Exited { .. }), Some(id)) => {
                        terminated_of(id, Some(exited))
                    }
                    _ => run.last_terminated.clone(),
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }
    }

    pub(super) fn status(&self) -> PodStatus {
        let spec = self.spec();
        let init_statuses: Vec<ContainerStatus> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|container| self.container_status(container, true))
            .collect();
        let statuses: Vec<ContainerStatus> = spec
            .containers
            .iter()
            .map(|container| self.container_status(container, false))
            .collect();
        let policy = self.restart_policy();
        let init_done = init_statuses.iter().all(|status| {
            status
                .state
                .as_ref()
                .and_then(|state| state.terminated.as_ref())
                .is_some_and(|terminated| terminated.exit_code == 0)
        });
        let init_failed = policy == "Never"
            && init_statuses.iter().any(|status| {
                status
                    .state
                    .as_ref()
                    .and_then(|state| state.terminated.as_ref())
                    .is_some_and(|terminated| terminated.exit_code != 0)
            });
        // kubelet's reading of the containers: a container waiting to
        // restart counts as stopped.
        let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
        for status in &statuses {
            let state = status.state.clone().unwrap_or_default();
            if state.running.is_some() {
                running += 1;
            } else if let Some(terminated) = &state.terminated {
                stopped += 1;
                if terminated.exit_code == 0 {
                    succeeded += 1;
                }
            } else if let Some(last) = status
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
            {
                stopped += 1;
                if last.exit_code == 0 {
                    succeeded += 1;
                }
            } else {
                waiting += 1;
            }
        }
        let phase = if init_failed {
            "Failed"
        } else if !init_done || waiting > 0 {
            "Pending"
        } else if running > 0 {
            "Running"
        } else if stopped > 0 {
            if policy == "Always" {
                "Running"
            } else if stopped == succeeded {
                "Succeeded"
            } else if policy == "Never" {
                "Failed"
            } else {
                "Running"
            }
        } else {
            "Pending"
        };
        let all_ready = !statuses.is_empty() && statuses.iter().all(|status| status.ready);
        let now = now();
        let previous = self.pod.status.as_ref();
        let condition = |kind: &str, value: bool, reason: Option<&str>| {
            let status = if value { "True" } else { "False" };
            let transition = previous
                .and_then(|p| p.conditions.as_ref())
                .and_then(|conditions| conditions.iter().find(|c| c.type_ == kind))
                .filter(|c| c.status == status)
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            PodCondition {
                type_: kind.to_string(),
                status: status.to_string(),
                reason: reason.map(str::to_string),
                last_transition_time: Some(transition),
                ..PodCondition::default()
            }
        };
        // Ready and ContainersReady say the same, with the containers that
        // are not ready.
        let readiness = |kind: &str| {
            let mut ready = condition(
                kind,
                all_ready,
                (!all_ready).then_some(if phase == "Succeeded" || phase == "Failed" {
                    "PodCompleted"
                } else {
                    "ContainersNotReady"
                }),
            );
            if !all_ready {
                let names: Vec<&str> = statuses
                    .iter()
                    .filter(|status| !status.ready)
                    .map(|status| status.name.as_str())
                    .collect();
                ready.message = Some(format!(
                    "containers with unready status: [{}]",
                    names.join(" ")
                ));
            }
            ready
        };
        let mut conditions = vec![
            condition("PodReadyToStartContainers", self.sandbox_ready, None),
            condition(
                "Initialized",
                init_done,
                (!init_done).then_some("ContainersNotInitialized"),
            ),
            readiness("Ready"),
            readiness("ContainersReady"),
            condition("PodScheduled", true, None),
        ];
        // The scheduler's own condition stays as it wrote it.
        if let Some(scheduled) = previous
            .and_then(|p| p.conditions.as_ref())
            .and_then(|conditions| conditions.iter().find(|c| c.type_ == "PodScheduled"))
        {
            conditions.pop();
            conditions.push(scheduled.clone());
        }
        let pod_ip = self.pod_ip_text();
        PodStatus {
            phase: Some(phase.to_string()),
            conditions: Some(conditions),
            host_ip: Some(self.host_ip()),
            host_ips: Some(vec![k8s_openapi::api::core::v1::HostIP {
                ip: self.host_ip(),
            }]),
            pod_ip: (!pod_ip.is_empty()).then(|| pod_ip.clone()),
            pod_ips: (!pod_ip.is_empty()).then(|| vec![PodIP { ip: pod_ip }]),
            start_time: Some(
                previous
                    .and_then(|p| p.start_time.clone())
                    .unwrap_or_else(|| self.started_at.clone()),
            ),
            container_statuses: Some(statuses),
            init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
            qos_class: previous.and_then(|p| p.qos_class.clone()),
            ..PodStatus::default()
        }
    }
}

pub(super) fn terminated_of(
    id: &ContainerId,
    status: Option<&RuntimeStatus>,
) -> Option<ContainerStateTerminated> {
    match status? {
        RuntimeStatus::Exited {
            exit_code,
            signal,
            reason,
            message,
            started_at,
            finished_at,
        } => Some(ContainerStateTerminated {
            exit_code: *exit_code,
            signal: *signal,
            reason: Some(reason.as_str().to_string()),
            message: (!message.is_empty()).then(|| message.clone()),
            started_at: started_at.map(time_of),
            finished_at: Some(time_of(*finished_at)),
            container_id: Some(format!("shoal://{id}")),
        }),
        _ => None,
    }
}

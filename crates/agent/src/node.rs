//! The machine as a Node: what it has (capacity, allocatable), what it is
//! (`nodeInfo`, addresses, labels), and whether it is well (conditions).
//! Registered once at start; its status is sent again when it changes or
//! once `status_report` has passed, as kubelet does.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::{AgentConfig, AgentError};

/// The version the agent reports as kubelet's (the API server reports the
/// same Kubernetes version).
pub const KUBELET_VERSION: &str = "v1.33.0-shoal";

/// What the machine has, read from the kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub cpus: u32,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
    pub info: NodeSystemInfo,
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_string())
        .unwrap_or_default()
}

/// Memory the agent keeps back from pods (kubelet's default hard eviction
/// threshold, `memory.available<100Mi`).
const MEMORY_RESERVED: u64 = 100 * 1024 * 1024;

impl Machine {
    pub fn read(data_dir: &std::path::Path) -> Machine {
        let cpus = std::thread::available_parallelism()
            .map(|count| count.get() as u32)
            .unwrap_or(1);
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|line| line.starts_with("MemTotal:"))
                    .and_then(|line| line.split_whitespace().nth(1))
                    .and_then(|kib| kib.parse::<u64>().ok())
            })
            .unwrap_or(0)
            * 1024;
        let ephemeral_storage_bytes = nix::sys::statvfs::statvfs(data_dir)
            .or_else(|_| nix::sys::statvfs::statvfs("/"))
            .map(|stats| stats.blocks() * stats.fragment_size())
            .unwrap_or(0);
        let os_image = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|line| line.strip_prefix("PRETTY_NAME="))
                    .map(|value| value.trim_matches('"').to_string())
            })
            .unwrap_or_else(|| "Linux".to_string());
        let machine_id = read_trimmed("/etc/machine-id");
        let system_uuid = Some(read_trimmed("/sys/class/dmi/id/product_uuid"))
            .filter(|uuid| !uuid.is_empty())
            .unwrap_or_else(|| machine_id.clone());
        Machine {
            cpus,
            memory_bytes,
            ephemeral_storage_bytes,
            info: NodeSystemInfo {
                architecture: go_arch().to_string(),
                boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
                container_runtime_version: format!("shoal://{}", env!("CARGO_PKG_VERSION")),
                kernel_version: read_trimmed("/proc/sys/kernel/osrelease"),
                kube_proxy_version: KUBELET_VERSION.to_string(),
                kubelet_version: KUBELET_VERSION.to_string(),
                machine_id,
                operating_system: "linux".to_string(),
                os_image,
                system_uuid,
                swap: None,
            },
        }
    }
}

/// The architecture as Go (and so Kubernetes' labels) names it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

fn quantity(text: String) -> Quantity {
    Quantity(text)
}

/// The Node's labels: the well-known ones, then the `--node-label`s.
pub fn labels(config: &AgentConfig) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (
            "kubernetes.io/hostname".to_string(),
            config.node_name.clone(),
        ),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), go_arch().to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), go_arch().to_string()),
    ]);
    labels.extend(config.labels.clone());
    labels
}

fn condition(kind: &str, status: &str, reason: &str, message: &str, now: &Time) -> NodeCondition {
    NodeCondition {
        type_: kind.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    }
}

/// The Node's status as the machine is now. `problem` (e.g. no pod range)
/// makes it not Ready, with that message.
pub fn status(config: &AgentConfig, machine: &Machine, problem: Option<&str>) -> NodeStatus {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let capacity = BTreeMap::from([
        ("cpu".to_string(), quantity(machine.cpus.to_string())),
        (
            "memory".to_string(),
            quantity(format!("{}Ki", machine.memory_bytes / 1024)),
        ),
        (
            "ephemeral-storage".to_string(),
            quantity(format!("{}Ki", machine.ephemeral_storage_bytes / 1024)),
        ),
        ("pods".to_string(), quantity(config.max_pods.to_string())),
    ]);
    let mut allocatable = capacity.clone();
    allocatable.insert(
        "memory".to_string(),
        quantity(format!(
            "{}Ki",
            machine.memory_bytes.saturating_sub(MEMORY_RESERVED) / 1024
        )),
    );
    let ready = match problem {
        None => condition(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
            &now,
        ),
        Some(problem) => condition("Ready", "False", "KubeletNotReady", problem, &now),
    };
    NodeStatus {
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".to_string(),
                address: config.node_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".to_string(),
                address: config.node_name.clone(),
            },
        ]),
        allocatable: Some(allocatable),
        capacity: Some(capacity),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
                &now,
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
                &now,
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
                &now,
            ),
            ready,
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(config.agent_port),
            }),
        }),
        node_info: Some(machine.info.clone()),
        ..NodeStatus::default()
    }
}

/// Whether two statuses differ in anything but their heartbeat times.
pub fn status_changed(old: &NodeStatus, new: &NodeStatus) -> bool {
    let strip = |status: &NodeStatus| {
        let mut status = status.clone();
        for condition in status.conditions.iter_mut().flatten() {
            condition.last_heartbeat_time = None;
            condition.last_transition_time = None;
        }
        status
    };
    strip(old) != strip(new)
}

fn ready_of(status: &NodeStatus) -> Option<&str> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|condition| condition.type_ == "Ready")
        .map(|condition| condition.status.as_str())
}

/// Keeps `new`'s conditions' transition times from `old` where the
/// condition's status did not change (as kubelet does).
fn carry_transitions(old: Option<&NodeStatus>, new: &mut NodeStatus) {
    let Some(old) = old else { return };
    for condition in new.conditions.iter_mut().flatten() {
        if let Some(previous) = old
            .conditions
            .iter()
            .flatten()
            .find(|previous| previous.type_ == condition.type_)
            && previous.status == condition.status
        {
            condition.last_transition_time = previous.last_transition_time.clone();
        }
    }
}

/// Registers the Node, or takes over the one a previous run registered
/// (labels brought up to date). Returns it as the API holds it.
pub async fn register(
    nodes: &Api<Node>,
    config: &AgentConfig,
    machine: &Machine,
) -> Result<Node, AgentError> {
    let register_error = |source| AgentError::Register {
        node: config.node_name.clone(),
        source,
    };
    let node = Node {
        metadata: ObjectMeta {
            name: Some(config.node_name.clone()),
            labels: Some(labels(config)),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            taints: (!config.taints.is_empty()).then(|| config.taints.clone()),
            ..NodeSpec::default()
        }),
        status: Some(status(config, machine, Some("the node agent is starting"))),
    };
    let registered = match nodes.create(&PostParams::default(), &node).await {
        Ok(created) => created,
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let patch = serde_json::json!({"metadata": {"labels": labels(config)}});
            nodes
                .patch(
                    &config.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(register_error)?
        }
        Err(error) => return Err(register_error(error)),
    };
    Ok(registered)
}

/// Sends the Node's status.
pub async fn send_status(
    nodes: &Api<Node>,
    name: &str,
    previous: Option<&NodeStatus>,
    mut status: NodeStatus,
) -> Result<NodeStatus, kube::Error> {
    carry_transitions(previous, &mut status);
    let patch = serde_json::json!({ "status": status });
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(status)
}

/// Reports the Node's status until `shutdown`: checked every
/// `status_check`, sent when it changed or `status_report` passed.
/// `problem` says, each time, what keeps the node from being Ready.
pub async fn report_status(
    nodes: Api<Node>,
    config: AgentConfig,
    machine: Machine,
    problem: impl Fn() -> Option<String>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut sent: Option<(NodeStatus, Instant)> = None;
    loop {
        let current = status(&config, &machine, problem().as_deref());
        // The API's copy may say otherwise than what was sent: the node
        // lifecycle controller marks a node it stopped hearing from
        // Unknown. Its Ready is put right at once (a transition, timed now).
        let api_copy = match &sent {
            Some(_) => nodes
                .get_status(&config.node_name)
                .await
                .ok()
                .and_then(|node| node.status)
                .filter(|api_status| ready_of(api_status) != ready_of(&current)),
            None => None,
        };
        let due = match &sent {
            None => true,
            Some((previous, at)) => {
                api_copy.is_some()
                    || status_changed(previous, &current)
                    || at.elapsed() >= config.status_report
            }
        };
        if due {
            let previous = api_copy
                .as_ref()
                .or(sent.as_ref().map(|(status, _)| status));
            match send_status(&nodes, &config.node_name, previous, current).await {
                Ok(status) => sent = Some((status, Instant::now())),
                Err(error) => tracing::warn!(%error, "cannot report the node's status"),
            }
        }
        let wait = if sent.is_some() {
            config.status_check
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|stopped| *stopped) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_carries_what_clients_require() {
        let dir = tempfile::tempdir().unwrap();
        let config = AgentConfig::new(
            "node-a".into(),
            dir.path().to_path_buf(),
            "10.0.0.5".parse().unwrap(),
        );
        let machine = Machine::read(dir.path());
        assert!(machine.cpus >= 1 && machine.memory_bytes > 0);
        let status = status(&config, &machine, None);
        let info = status.node_info.as_ref().unwrap();
        // The Python client refuses a NodeSystemInfo with any of these empty.
        for (field, value) in [
            ("architecture", &info.architecture),
            ("bootID", &info.boot_id),
            ("containerRuntimeVersion", &info.container_runtime_version),
            ("kernelVersion", &info.kernel_version),
            ("kubeletVersion", &info.kubelet_version),
            ("operatingSystem", &info.operating_system),
            ("osImage", &info.os_image),
        ] {
            assert!(!value.is_empty(), "{field} is empty");
        }
        let ready = status
            .conditions
            .iter()
            .flatten()
            .find(|condition| condition.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(
            status.addresses.as_ref().unwrap()[0].address,
            "10.0.0.5".to_string()
        );
        // Heartbeat times alone are no change; a condition is.
        let later = super::status(&config, &machine, None);
        assert!(!status_changed(&status, &later));
        let not_ready = super::status(&config, &machine, Some("no pod range"));
        assert!(status_changed(&status, &not_ready));
    }
}

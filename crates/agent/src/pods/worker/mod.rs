//! One pod's worker: a task that converges the machine to the pod as the
//! API has it (kubelet's pod worker and `syncPod`), and reports what it
//! finds as the pod's status.
//!
//! Each round: a pod being deleted is stopped (its grace period, then
//! SIGKILL), its sandbox removed, and its deletion finished; otherwise the
//! sandbox is made, volumes prepared, init containers run one at a time to
//! completion, the app containers started, restarted by the restart policy
//! with kubelet's back-off, and probed; then the status is sent if it
//! changed. A round runs when the pod changes and every second.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::{ConfigMap, Container, ContainerStateTerminated, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use runtime::pod::{
    ContainerId, ContainerSpec, ContainerStatus as RuntimeStatus, ImageInfo, Mount, PodError,
    PodRuntime, PortMapping, Protocol, PullPolicy, RegistryAuth, SandboxSpec,
};
use tokio::sync::mpsc;

use super::events::Events;
use super::probe::{self, Outcome, ProbeState};
use super::status::terminated_of;
use super::{names, spec, volumes};
use crate::AgentConfig;

mod probing;
mod start;

/// What a worker shares with the agent.
pub struct Context {
    pub client: kube::Client,
    pub runtime: PodRuntime,
    pub config: AgentConfig,
    pub events: Events,
    /// The image scan policy, when it is on: shared by every worker, so
    /// an image is scanned once for all the pods that run it.
    pub scan_policy: Option<Arc<scanner::policy::ScanPolicy>>,
}

/// What the worker is told.
pub enum Update {
    /// The pod as the API has it now.
    Pod(Box<Pod>),
    /// The pod is gone from the API.
    Gone,
}

/// kubelet's restart back-off: 10 s doubling to 5 min, forgotten after a
/// container ran 10 minutes.
const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
const BACKOFF_RESET: Duration = Duration::from_secs(600);

#[derive(Default)]
pub(super) struct Run {
    /// The current instance, if one was made.
    pub(super) id: Option<ContainerId>,
    /// The instance number of the current one (its restart count).
    pub(super) attempt: u32,
    pub(super) image: Option<ImageInfo>,
    pub(super) waiting: Option<(String, String)>,
    pub(super) last_terminated: Option<ContainerStateTerminated>,
    pub(super) backoff: Option<Duration>,
    pub(super) next_start: Option<Instant>,
    /// When a failed image pull is tried again.
    pub(super) image_retry: Option<Instant>,
    pub(super) liveness: Option<ProbeState>,
    pub(super) readiness: Option<ProbeState>,
    pub(super) startup: Option<ProbeState>,
    /// The last status the runtime gave.
    pub(super) status: Option<RuntimeStatus>,
    /// The exit of an instance already counted (so a restart happens once).
    pub(super) handled_exit: Option<ContainerId>,
}

pub struct Worker {
    pub(super) ctx: Arc<Context>,
    pub(super) pod: Pod,
    pub(super) uid: String,
    pub(super) gone: bool,
    pub(super) pod_ip: Option<IpAddr>,
    pub(super) sandbox_ready: bool,
    pub(super) mounts: Option<HashMap<String, PathBuf>>,
    /// The pod's `/etc/resolv.conf` and `/etc/hosts` (`names`), written
    /// with its volumes and mounted into every container.
    pub(super) name_mounts: Vec<Mount>,
    pub(super) runs: HashMap<String, Run>,
    pub(super) last_sent: Option<serde_json::Value>,
    pub(super) started_at: Time,
}

pub(super) fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

pub(super) fn time_of(at: SystemTime) -> Time {
    Time(
        k8s_openapi::jiff::Timestamp::try_from(at)
            .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now()),
    )
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PodError> + Send + 'static,
) -> Result<T, PodError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|error| Err(PodError::Runtime(anyhow::anyhow!("{error}"))))
}

impl Worker {
    /// A worker for `pod`, adopting what a previous run of the agent left
    /// on the machine for it.
    pub fn new(
        ctx: Arc<Context>,
        pod: Pod,
        existing: Option<runtime::pod::SandboxRecord>,
    ) -> Worker {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut worker = Worker {
            ctx,
            pod,
            uid,
            gone: false,
            pod_ip: None,
            sandbox_ready: false,
            mounts: None,
            name_mounts: Vec::new(),
            runs: HashMap::new(),
            last_sent: None,
            started_at: now(),
        };
        if let Some(record) = existing {
            // The sandbox is looked up again on the first round: after a
            // reboot its namespaces are gone and it is made anew.
            for container in record.containers {
                let run = worker.runs.entry(container.name.clone()).or_default();
                if run.id.is_none() || container.attempt >= run.attempt {
                    run.id = Some(container.id.clone());
                    run.attempt = container.attempt;
                    run.status = Some(container.status.clone());
                    // An exit seen before the restart is already counted.
                    if matches!(container.status, RuntimeStatus::Exited { .. }) {
                        run.handled_exit = None;
                    }
                }
            }
        }
        worker
    }

    pub(super) fn spec(&self) -> k8s_openapi::api::core::v1::PodSpec {
        self.pod.spec.clone().unwrap_or_default()
    }

    pub(super) fn host_ip(&self) -> String {
        self.ctx.config.node_ip.to_string()
    }

    pub(super) fn host_network(&self) -> bool {
        self.spec().host_network.unwrap_or(false)
    }

    pub(super) fn pod_ip_text(&self) -> String {
        if self.host_network() {
            return self.host_ip();
        }
        self.pod_ip.map(|ip| ip.to_string()).unwrap_or_default()
    }

    /// Runs until the pod is gone from the machine and the API.
    pub async fn run(mut self, mut updates: mpsc::Receiver<Update>) {
        loop {
            if self.sync().await {
                return;
            }
            let tick = tokio::time::sleep(Duration::from_secs(1));
            tokio::select! {
                update = updates.recv() => match update {
                    Some(Update::Pod(pod)) => {
                        self.pod = *pod;
                        // Take every queued update: only the newest counts.
                        while let Ok(next) = updates.try_recv() {
                            match next {
                                Update::Pod(pod) => self.pod = *pod,
                                Update::Gone => self.gone = true,
                            }
                        }
                    }
                    Some(Update::Gone) => self.gone = true,
                    // The agent is stopping: the pod stays as it is, for
                    // the next start to adopt.
                    None => return,
                },
                () = tick => {}
            }
        }
    }

    fn deleting(&self) -> bool {
        self.gone || self.pod.metadata.deletion_timestamp.is_some()
    }

    /// One round; true when the worker is done.
    async fn sync(&mut self) -> bool {
        if self.deleting() {
            self.terminate().await;
            return true;
        }
        let phase = self
            .pod
            .status
            .as_ref()
            .and_then(|status| status.phase.clone())
            .unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            // Done: nothing runs again; its containers stay for logs until
            // the pod is deleted.
            return false;
        }
        if !self.sandbox_ready && !self.make_sandbox().await {
            self.send_status().await;
            return false;
        }
        if self.mounts.is_none() && !self.prepare_volumes().await {
            self.send_status().await;
            return false;
        }
        let spec = self.spec();
        let mut init_done = true;
        for container in spec.init_containers.iter().flatten() {
            self.refresh(&container.name).await;
            match self.init_state(&container.name) {
                InitState::Succeeded => continue,
                InitState::Running => {
                    init_done = false;
                    break;
                }
                InitState::Failed | InitState::NotStarted => {
                    init_done = false;
                    self.step_init(container).await;
                    break;
                }
            }
        }
        if init_done {
            for container in spec.containers.iter() {
                self.refresh(&container.name).await;
                self.step_container(container).await;
            }
        }
        self.send_status().await;
        false
    }

    async fn make_sandbox(&mut self) -> bool {
        let spec = self.spec();
        let mut port_mappings = Vec::new();
        for container in spec.containers.iter() {
            for port in container.ports.iter().flatten() {
                if let Some(host_port) = port.host_port.filter(|port| *port > 0) {
                    port_mappings.push(PortMapping {
                        host_port: host_port as u16,
                        container_port: port.container_port as u16,
                        protocol: if port.protocol.as_deref() == Some("UDP") {
                            Protocol::Udp
                        } else {
                            Protocol::Tcp
                        },
                    });
                }
            }
        }
        let sandbox = SandboxSpec {
            uid: self.uid.clone(),
            name: self.pod.metadata.name.clone().unwrap_or_default(),
            namespace: self.pod.metadata.namespace.clone().unwrap_or_default(),
            hostname: spec.hostname.clone(),
            host_network: spec.host_network.unwrap_or(false),
            port_mappings,
        };
        let runtime = self.ctx.runtime.clone();
        match blocking(move || runtime.create_sandbox(&sandbox)).await {
            Ok(info) => {
                self.pod_ip = info.ip.map(IpAddr::V4);
                self.sandbox_ready = true;
                true
            }
            Err(error) => {
                self.ctx.events.pod(
                    &self.pod,
                    true,
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {error}"),
                );
                false
            }
        }
    }

    async fn prepare_volumes(&mut self) -> bool {
        let (config_map_names, secret_names) = volumes::references(&self.pod);
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let mut sources = volumes::Sources::default();
        let config_maps: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &namespace);
        for name in config_map_names {
            match config_maps.get_opt(&name).await {
                Ok(found) => {
                    sources.config_maps.insert(name, found);
                }
                Err(error) => {
                    tracing::debug!(%error, "cannot read a ConfigMap for a volume");
                    return false;
                }
            }
        }
        for name in secret_names {
            match secrets.get_opt(&name).await {
                Ok(found) => {
                    sources.secrets.insert(name, found);
                }
                Err(error) => {
                    tracing::debug!(%error, "cannot read a Secret for a volume");
                    return false;
                }
            }
        }
        let dir = volumes::pod_dir(&self.ctx.config.data_dir, &self.uid).join("volumes");
        let mut mounts = HashMap::new();
        for volume in self.spec().volumes.iter().flatten() {
            match volumes::prepare(volume, &self.pod, &dir, &sources, &self.host_ip()) {
                Ok(path) => {
                    mounts.insert(volume.name.clone(), path);
                }
                Err(error) => {
                    self.ctx
                        .events
                        .pod(&self.pod, true, "FailedMount", error.to_string());
                    return false;
                }
            }
        }
        match self.write_name_files() {
            Ok(name_mounts) => self.name_mounts = name_mounts,
            Err(error) => {
                self.ctx.events.pod(
                    &self.pod,
                    true,
                    "FailedMount",
                    format!("cannot write the pod's resolv.conf and hosts files: {error}"),
                );
                return false;
            }
        }
        self.mounts = Some(mounts);
        true
    }

    /// Writes the pod's `resolv.conf` and `hosts` into its directory
    /// (`names`), and says where each container mounts them.
    fn write_name_files(&self) -> std::io::Result<Vec<Mount>> {
        let config = &self.ctx.config;
        let dir = volumes::pod_dir(&config.data_dir, &self.uid);
        std::fs::create_dir_all(&dir)?;
        let host_resolv_conf = std::fs::read_to_string(&config.resolv_conf).unwrap_or_default();
        let settings = names::NameSettings {
            cluster_dns: &config.cluster_dns,
            cluster_domain: &config.cluster_domain,
            host_resolv_conf: &host_resolv_conf,
        };
        let mut files = vec![("resolv.conf", names::resolv_conf(&self.pod, &settings))];
        if let Some(hosts) = names::hosts_file(&self.pod, self.pod_ip, &config.cluster_domain) {
            files.push(("etc-hosts", hosts));
        }
        let mut mounts = Vec::new();
        for (file, text) in files {
            let path = dir.join(file);
            let staged = dir.join(format!(".{file}.new"));
            std::fs::write(&staged, text)?;
            std::fs::rename(&staged, &path)?;
            let container_path = if file == "etc-hosts" {
                "/etc/hosts"
            } else {
                "/etc/resolv.conf"
            };
            mounts.push(Mount {
                host_path: path,
                container_path: PathBuf::from(container_path),
                read_only: false,
            });
        }
        Ok(mounts)
    }

    /// Reads the current instance's status from the runtime.
    async fn refresh(&mut self, name: &str) {
        let Some(id) = self.runs.get(name).and_then(|run| run.id.clone()) else {
            return;
        };
        let runtime = self.ctx.runtime.clone();
        let status = blocking(move || runtime.container_status(&id)).await.ok();
        if let Some(run) = self.runs.get_mut(name) {
            run.status = status;
        }
    }

    fn init_state(&self, name: &str) -> InitState {
        match self.runs.get(name).and_then(|run| run.status.as_ref()) {
            None => InitState::NotStarted,
            Some(RuntimeStatus::Created) | Some(RuntimeStatus::Running { .. }) => {
                InitState::Running
            }
            Some(RuntimeStatus::Exited { exit_code: 0, .. }) => InitState::Succeeded,
            Some(RuntimeStatus::Exited { .. }) => InitState::Failed,
        }
    }

    pub(super) fn restart_policy(&self) -> String {
        self.spec()
            .restart_policy
            .unwrap_or_else(|| "Always".to_string())
    }

    async fn step_init(&mut self, container: &Container) {
        // A failed init container restarts unless the policy is Never, in
        // which case the pod has failed (its status says so).
        if matches!(self.init_state(&container.name), InitState::Failed)
            && self.restart_policy() == "Never"
        {
            return;
        }
        self.start_when_due(container).await;
    }

    async fn step_container(&mut self, container: &Container) {
        let name = container.name.clone();
        let status = self.runs.get(&name).and_then(|run| run.status.clone());
        match status {
            None => self.start_when_due(container).await,
            Some(RuntimeStatus::Created) => {}
            Some(RuntimeStatus::Running { .. }) => {
                self.probe(container).await;
            }
            Some(RuntimeStatus::Exited { exit_code, .. }) => {
                let restart = match self.restart_policy().as_str() {
                    "Never" => false,
                    "OnFailure" => exit_code != 0,
                    _ => true,
                };
                if restart {
                    self.start_when_due(container).await;
                }
            }
        }
    }

    /// Stops everything of the pod, removes it from the machine, and
    /// finishes its deletion in the API.
    async fn terminate(&mut self) {
        let spec = self.spec();
        let grace = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or(spec.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0) as u64;
        let grace = Duration::from_secs(grace);
        let mut stops = Vec::new();
        for (name, run) in &self.runs {
            if let (Some(id), Some(RuntimeStatus::Running { .. })) = (&run.id, &run.status) {
                self.ctx.events.pod_field(
                    &self.pod,
                    Some(format!("spec.containers{{{name}}}")),
                    false,
                    "Killing",
                    format!("Stopping container {name}"),
                );
                let runtime = self.ctx.runtime.clone();
                let id = id.clone();
                stops.push(blocking(move || runtime.stop_container(&id, grace)));
            }
        }
        futures::future::join_all(stops).await;
        let runtime = self.ctx.runtime.clone();
        let uid = self.uid.clone();
        if let Err(error) = blocking(move || runtime.remove_sandbox(&uid)).await {
            tracing::warn!(%error, pod = %self.uid, "cannot remove a pod's sandbox");
        }
        let _ = std::fs::remove_dir_all(volumes::pod_dir(&self.ctx.config.data_dir, &self.uid));
        if self.gone {
            return;
        }
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match pods.delete(&name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(error) => tracing::warn!(%error, pod = %name, "cannot finish a pod's deletion"),
        }
    }

    /// Sends the pod's status if it differs from what was sent last.
    async fn send_status(&mut self) {
        let status = self.status();
        let value = serde_json::to_value(&status).unwrap_or_default();
        if self.last_sent.as_ref() == Some(&value) {
            return;
        }
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let patch = serde_json::json!({
            "metadata": {"uid": self.uid},
            "status": value,
        });
        match pods
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => self.last_sent = Some(value),
            Err(error) => tracing::debug!(%error, pod = %name, "cannot send a pod's status"),
        }
    }
}

enum InitState {
    NotStarted,
    Running,
    Succeeded,
    Failed,
}

fn humanize(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds >= 60 && seconds.is_multiple_of(60) {
        format!("{}m0s", seconds / 60)
    } else if seconds >= 60 {
        format!("{}m{}s", seconds / 60, seconds % 60)
    } else {
        format!("{seconds}s")
    }
}

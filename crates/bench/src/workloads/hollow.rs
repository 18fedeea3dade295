//! `hollow-nodes`: thousands of simulated machines in this process, as
//! Kubernetes' kubemark and KWOK fake them, against a real shoal server and
//! its scheduler. Each hollow node is a real Node object (Ready, with
//! capacity and a zone) and a real Lease in `kube-node-lease`, renewed every
//! `--lease-interval` seconds (spread over the interval); one watch over the
//! run's namespace sees pods bound and marks them Running (a status patch)
//! without starting anything. Pods are created through the API at
//! `--rate`; the scheduler binds them through the API; every binding is a
//! store write. Reported: bindings per second from the first binding seen to
//! the last, create-to-bound latency (from the create's answer to the
//! binding's arrival in the watch), errors, and the server's and this
//! process's peak memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use clap::Args;
use http::header::{ACCEPT, CONTENT_TYPE};
use serde::Deserialize;
use serde_json::json;

use crate::BenchArgs;
use crate::kube::{self, KubeConfig, KubeConnection};
use crate::report::{Recorder, Section, Summary};

#[derive(Args, Debug, Clone)]
pub struct HollowNodesArgs {
    /// The kubeconfig to connect with.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: std::path::PathBuf,
    /// Hollow nodes to register.
    #[arg(long, default_value_t = 10_000)]
    pub nodes: u64,
    /// Pods to create.
    #[arg(long, default_value_t = 300_000)]
    pub pods: u64,
    /// Offered pod creates per second (0: as fast as `--concurrency` allows).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Creates (and node registrations) in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Zones the nodes are spread over (`topology.kubernetes.io/zone`).
    #[arg(long, default_value_t = 3)]
    pub zones: u64,
    /// Seconds between two renewals of a node's Lease.
    #[arg(long, default_value_t = 10)]
    pub lease_interval: u64,
    /// Give up when no pod has been bound for this many seconds.
    #[arg(long, default_value_t = 60)]
    pub stall_timeout: u64,
    /// After the pods: a Deployment of this many hollow pods, made with 0
    /// replicas and scaled up at once; timed to all bound and all available.
    #[arg(long, default_value_t = 0)]
    pub deployment_replicas: u64,
    /// Then roll the Deployment to a new template (maxSurge 25%), timed to
    /// the rollout complete.
    #[arg(long, requires = "deployment_replicas")]
    pub rolling_update: bool,
    /// At the end, hold still this long (leases still renewed) and report
    /// the CPU the server and `--controllers-pid` used meanwhile.
    #[arg(long, default_value_t = 0)]
    pub rest_seconds: u64,
    /// A `shoal controllers` process whose CPU at rest is reported.
    #[arg(long)]
    pub controllers_pid: Option<u32>,
    /// The server's process id: its peak RSS and CPU time are reported.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// A hollow node's capacity (a large machine: 32 cores, 256 GiB, 110 pods).
const NODE_CPU: &str = "32";
const NODE_MEMORY: &str = "256Gi";
const NODE_PODS: u64 = 110;
/// Each pod requests 100m and 128 MiB: the pod limit binds first.
const POD_CPU: &str = "100m";
const POD_MEMORY: &str = "128Mi";
/// Status patches (pods marked Running) in flight at once.
const STATUS_CONCURRENCY: usize = 32;
/// HTTP/2 connections: creates, watch, leases and status patches share them.
const MIN_CONNECTIONS: usize = 4;

/// A watch event, only the fields the hollow nodes read.
#[derive(Deserialize)]
struct WatchEvent {
    #[serde(rename = "type")]
    kind: String,
    object: WatchedPod,
}

#[derive(Deserialize)]
struct WatchedPod {
    metadata: WatchedMeta,
    #[serde(default)]
    spec: Option<WatchedSpec>,
}

#[derive(Deserialize)]
struct WatchedMeta {
    #[serde(default)]
    name: String,
    #[serde(rename = "resourceVersion", default)]
    resource_version: String,
    #[serde(rename = "deletionTimestamp", default)]
    deletion_timestamp: Option<String>,
}

/// A list's answer: its pods and its resourceVersion.
#[derive(Deserialize)]
struct PodList {
    metadata: WatchedMeta,
    items: Vec<WatchedPod>,
}

#[derive(Deserialize)]
struct WatchedSpec {
    #[serde(rename = "nodeName", default)]
    node_name: Option<String>,
}

/// Per pod: when its create was answered and when its binding was seen
/// (nanoseconds since the run's start, 0 for not yet), and its node.
pub(crate) struct Timeline {
    start: Instant,
    created_at: Vec<AtomicU64>,
    bound_at: Vec<AtomicU64>,
    node_of: Mutex<Vec<u32>>,
    n_bound: AtomicU64,
    /// Pods the bench did not create itself (a controller's), by name:
    /// when each was first seen bound.
    pub(crate) others_bound_at: Mutex<HashMap<String, u64>>,
    /// Pods seen being deleted, told to the hollow kubelet once.
    deleting: Mutex<std::collections::HashSet<String>>,
    /// A pod seen bound to a second node: must never happen.
    rebound: AtomicU64,
    unknown_node: AtomicU64,
}

impl Timeline {
    pub(crate) fn now(&self) -> u64 {
        (self.start.elapsed().as_nanos() as u64).max(1)
    }
}

fn rss_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn node_body(name: &str, zone: &str) -> Bytes {
    Bytes::from(
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name,
                "topology.kubernetes.io/zone": zone,
                "node.kubernetes.io/instance-type": "hollow",
                "type": "hollow",
            }},
            "spec": {},
            "status": {
                "capacity": {"cpu": NODE_CPU, "memory": NODE_MEMORY, "pods": NODE_PODS.to_string()},
                "allocatable": {"cpu": NODE_CPU, "memory": NODE_MEMORY, "pods": NODE_PODS.to_string()},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                    "message": "hollow node: nothing runs here"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0-hollow", "architecture": "amd64", "operatingSystem": "linux",
                    "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "",
                    "containerRuntimeVersion": "", "kubeProxyVersion": ""},
            },
        })
        .to_string(),
    )
}

fn now_micro_time() -> String {
    // RFC 3339 with microseconds, as MicroTime wants, from the system clock.
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since_epoch.as_secs() as i64;
    let (days, day_seconds) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        day_seconds / 3600,
        day_seconds % 3600 / 60,
        day_seconds % 60,
        since_epoch.subsec_micros()
    )
}

fn lease_body(name: &str) -> Bytes {
    Bytes::from(
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now_micro_time()},
        })
        .to_string(),
    )
}

fn pod_body(name: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{"app":"hollow"}}}},"spec":{{"containers":[{{"name":"pause","image":"registry.k8s.io/pause:3.10","resources":{{"requests":{{"cpu":"{POD_CPU}","memory":"{POD_MEMORY}"}}}}}}]}}}}"#
    ))
}

async fn post(connection: &KubeConnection, path: &str, body: Bytes) -> anyhow::Result<()> {
    connection
        .request(
            http::Method::POST,
            path,
            &[
                (CONTENT_TYPE, "application/json"),
                (ACCEPT, "application/json"),
            ],
            Some(body),
        )
        .await?
        .ok()?;
    Ok(())
}

async fn merge_patch(connection: &KubeConnection, path: &str, body: Bytes) -> anyhow::Result<()> {
    connection
        .request(
            http::Method::PATCH,
            path,
            &[
                (CONTENT_TYPE, "application/merge-patch+json"),
                (ACCEPT, "application/json"),
            ],
            Some(body),
        )
        .await?
        .ok()?;
    Ok(())
}

/// A bound pod's status as the hollow kubelet reports it: Running, Ready.
fn running_status() -> Bytes {
    let now = now_micro_time();
    let now = &now[..19];
    Bytes::from(
        json!({"status": {"phase": "Running", "startTime": format!("{now}Z"), "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": format!("{now}Z")},
            {"type": "Initialized", "status": "True", "lastTransitionTime": format!("{now}Z")},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": format!("{now}Z")},
            {"type": "Ready", "status": "True", "lastTransitionTime": format!("{now}Z")}]}})
        .to_string(),
    )
}

/// Deletes a pod at once (grace 0), as a kubelet finishes a graceful
/// delete; a pod already gone is no error.
async fn finish_delete(connection: &KubeConnection, path: &str) -> anyhow::Result<()> {
    let answer = connection
        .request(
            http::Method::DELETE,
            path,
            &[
                (CONTENT_TYPE, "application/json"),
                (ACCEPT, "application/json"),
            ],
            Some(Bytes::from_static(br#"{"gracePeriodSeconds":0}"#)),
        )
        .await?;
    if answer.status == http::StatusCode::NOT_FOUND {
        return Ok(());
    }
    answer.ok()?;
    Ok(())
}

/// Runs `n` requests with at most `concurrency` in flight; returns their
/// latencies (each request times itself, so a wait for its turn at a fixed
/// rate is not counted) and errors.
async fn in_parallel<F, Fut>(n: u64, concurrency: usize, request: F) -> Recorder
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Duration>>,
{
    use futures::StreamExt as _;
    let recorder = Mutex::new(Recorder::new());
    futures::stream::iter(0..n)
        .for_each_concurrent(concurrency.max(1), |idx| {
            let call = request(idx);
            let recorder = &recorder;
            async move {
                let outcome = call.await;
                let mut recorder = recorder.lock().expect("recorder lock");
                match outcome {
                    Ok(latency) => recorder.record(latency),
                    Err(error) => recorder.record_error(format!("{error:#}")),
                }
            }
        })
        .await;
    recorder.into_inner().expect("recorder lock")
}

/// The one watch over the run's pods. The server ends a watch that falls
/// behind (its clients re-watch, as client-go's reflector does): it is
/// opened again from the last resourceVersion seen, or, when that is gone
/// (410), from a list.
struct PodWatch {
    connection: KubeConnection,
    namespace: String,
    node_prefix: String,
    n_nodes: u64,
    timeline: Arc<Timeline>,
    kubelet: tokio::sync::mpsc::UnboundedSender<Kubelet>,
}

/// What the hollow kubelet does for a pod: mark it Running and Ready once
/// bound, or finish its deletion (as a kubelet does once its containers
/// have stopped) when it is being deleted.
pub(crate) enum Kubelet {
    Run(String),
    Delete(String),
}

/// How often the watch may be opened again in one run.
const MAX_REWATCHES: u32 = 1000;

impl PodWatch {
    async fn open(&self, resource_version: &str) -> anyhow::Result<http::Response<h2::RecvStream>> {
        let mut path = format!(
            "/api/v1/namespaces/{}/pods?watch=1&allowWatchBookmarks=true",
            self.namespace
        );
        if !resource_version.is_empty() {
            path.push_str(&format!("&resourceVersion={resource_version}"));
        }
        let response = self
            .connection
            .open(
                http::Method::GET,
                &path,
                &[(ACCEPT, "application/json")],
                None,
            )
            .await
            .context("cannot open the pod watch")?;
        anyhow::ensure!(
            response.status().is_success(),
            "the pod watch answered {}",
            response.status()
        );
        Ok(response)
    }

    async fn run(self, first: http::Response<h2::RecvStream>) {
        let mut response = Some(first);
        let mut resource_version = String::new();
        for _ in 0..MAX_REWATCHES {
            let opened = match response.take() {
                Some(opened) => Ok(opened),
                None => self.open(&resource_version).await,
            };
            let expired = match opened {
                Ok(opened) => self.follow(opened, &mut resource_version).await,
                Err(_) => true,
            };
            if expired {
                match self.list().await {
                    Ok(version) => resource_version = version,
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
    }

    /// Reads one watch until it ends; returns whether it ended expired.
    async fn follow(
        &self,
        response: http::Response<h2::RecvStream>,
        resource_version: &mut String,
    ) -> bool {
        let mut stream = response.into_body();
        let mut buffer = BytesMut::new();
        while let Some(chunk) = stream.data().await {
            let Ok(chunk) = chunk else { return false };
            let _ = stream.flow_control().release_capacity(chunk.len());
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.iter().position(|byte| *byte == b'\n') {
                let line = buffer.split_to(end + 1);
                let Ok(event) = serde_json::from_slice::<WatchEvent>(&line) else {
                    // An ERROR event's object is a Status, not a pod.
                    if line.windows(7).any(|window| window == b"\"ERROR\"") {
                        return true;
                    }
                    continue;
                };
                if !event.object.metadata.resource_version.is_empty() {
                    *resource_version = event.object.metadata.resource_version.clone();
                }
                if event.kind == "ADDED" || event.kind == "MODIFIED" {
                    self.saw(event.object);
                }
            }
        }
        false
    }

    /// Catches up from a list; returns its resourceVersion.
    async fn list(&self) -> anyhow::Result<String> {
        let answer = self
            .connection
            .request(
                http::Method::GET,
                &format!("/api/v1/namespaces/{}/pods", self.namespace),
                &[(ACCEPT, "application/json")],
                None,
            )
            .await?
            .ok()?;
        let list: PodList = serde_json::from_slice(&answer.body)?;
        for pod in list.items {
            self.saw(pod);
        }
        Ok(list.metadata.resource_version)
    }

    /// A pod as seen: the first time it is seen bound, its binding counts.
    fn saw(&self, pod: WatchedPod) {
        let timeline = &self.timeline;
        let Some(node) = pod.spec.and_then(|spec| spec.node_name) else {
            return;
        };
        let name = pod.metadata.name;
        if pod.metadata.deletion_timestamp.is_some() {
            if timeline
                .deleting
                .lock()
                .expect("deleting lock")
                .insert(name.clone())
            {
                let _ = self.kubelet.send(Kubelet::Delete(name));
            }
            return;
        }
        let node_idx = node
            .strip_prefix(&self.node_prefix)
            .and_then(|idx| idx.parse::<u32>().ok())
            .filter(|idx| u64::from(*idx) < self.n_nodes);
        let Some(node_idx) = node_idx else {
            timeline.unknown_node.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(pod_idx) = name
            .strip_prefix("p-")
            .and_then(|idx| idx.parse::<usize>().ok())
            .filter(|idx| *idx < timeline.bound_at.len())
        else {
            // A controller's pod: its first sight bound is its binding.
            let mut others = timeline.others_bound_at.lock().expect("others lock");
            if !others.contains_key(&name) {
                others.insert(name.clone(), timeline.now());
                let _ = self.kubelet.send(Kubelet::Run(name));
            }
            return;
        };
        let first = {
            let mut node_of = timeline.node_of.lock().expect("node lock");
            let previous = node_of[pod_idx];
            if previous == u32::MAX {
                node_of[pod_idx] = node_idx;
                true
            } else {
                if previous != node_idx {
                    timeline.rebound.fetch_add(1, Ordering::Relaxed);
                }
                false
            }
        };
        if first {
            timeline.bound_at[pod_idx].store(timeline.now(), Ordering::Relaxed);
            timeline.n_bound.fetch_add(1, Ordering::Relaxed);
            let _ = self.kubelet.send(Kubelet::Run(name));
        }
    }
}

pub async fn hollow_nodes(args: &BenchArgs, workload: &HollowNodesArgs) -> anyhow::Result<Summary> {
    anyhow::ensure!(workload.nodes >= 1, "--nodes must be at least 1");
    anyhow::ensure!(workload.zones >= 1, "--zones must be at least 1");
    // A rolling update surges by a quarter.
    let deployment_room = workload.deployment_replicas + workload.deployment_replicas.div_ceil(4);
    anyhow::ensure!(
        workload.pods + deployment_room <= workload.nodes * NODE_PODS,
        "--pods {} (and a Deployment's {deployment_room}) do not fit on {} hollow nodes of {NODE_PODS} pods",
        workload.pods,
        workload.nodes
    );
    let config = KubeConfig::load(&workload.kubeconfig)?;
    let dial_timeout = Duration::from_secs(args.dial_timeout.max(1));
    let connections =
        kube::dial_all(&config, args.conns.max(MIN_CONNECTIONS), dial_timeout).await?;
    let connection = |idx: u64| connections[idx as usize % connections.len()].clone();
    let tag = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let namespace = format!("hollow-{tag}");
    let node_name = |idx: u64| format!("hollow-{tag}-{idx}");
    let own_pid = std::process::id();

    post(
        &connections[0],
        "/api/v1/namespaces",
        Bytes::from(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
                .to_string(),
        ),
    )
    .await
    .with_context(|| format!("cannot create namespace {namespace}"))?;

    // Sample the server's and this process's memory through the run.
    let sampling = Arc::new(AtomicBool::new(true));
    let server_peak_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let sampling = Arc::clone(&sampling);
        let server_peak_rss = Arc::clone(&server_peak_rss);
        let server_pid = workload.server_pid;
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some(rss) = server_pid.and_then(|pid| rss_bytes(pid, "VmRSS:")) {
                    server_peak_rss.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let server_cpu_before = workload.server_pid.and_then(cpu_seconds);
    let own_cpu_before = cpu_seconds(own_pid);

    // Register the nodes and their Leases.
    eprintln!("registering {} hollow nodes", workload.nodes);
    let registration_started = Instant::now();
    let registration = in_parallel(workload.nodes, workload.concurrency, |idx| {
        let connection = connection(idx);
        let name = node_name(idx);
        let zone = format!("zone-{}", idx % workload.zones);
        async move {
            let started = Instant::now();
            post(&connection, "/api/v1/nodes", node_body(&name, &zone)).await?;
            post(
                &connection,
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                lease_body(&name),
            )
            .await?;
            Ok(started.elapsed())
        }
    })
    .await;
    let registration_duration = registration_started.elapsed();
    anyhow::ensure!(
        registration.n_errors() == 0,
        "{} of {} hollow nodes failed to register: {registration:?}",
        registration.n_errors(),
        workload.nodes
    );

    // Renew the Leases: every node once per interval, spread evenly.
    let renewing = Arc::new(AtomicBool::new(true));
    let lease_recorder = Arc::new(Mutex::new(Recorder::new()));
    let renewer = {
        let renewing = Arc::clone(&renewing);
        let lease_recorder = Arc::clone(&lease_recorder);
        let connections = connections.clone();
        let n_nodes = workload.nodes;
        let interval = Duration::from_secs(workload.lease_interval.max(1));
        let tag = tag.clone();
        tokio::spawn(async move {
            const TICKS_PER_INTERVAL: u64 = 100;
            let mut tick = tokio::time::interval(interval / TICKS_PER_INTERVAL as u32);
            let mut next_node = 0u64;
            let per_tick = n_nodes.div_ceil(TICKS_PER_INTERVAL);
            while renewing.load(Ordering::Relaxed) {
                tick.tick().await;
                let batch: Vec<u64> = (0..per_tick)
                    .map(|offset| (next_node + offset) % n_nodes)
                    .collect();
                next_node = (next_node + per_tick) % n_nodes;
                let connections = connections.clone();
                let lease_recorder = Arc::clone(&lease_recorder);
                let tag = tag.clone();
                tokio::spawn(async move {
                    for idx in batch {
                        let started = Instant::now();
                        let path = format!(
                            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/hollow-{tag}-{idx}"
                        );
                        let body = Bytes::from(
                            json!({"spec": {"renewTime": now_micro_time()}}).to_string(),
                        );
                        let connection = &connections[idx as usize % connections.len()];
                        let outcome = merge_patch(connection, &path, body).await;
                        let mut recorder = lease_recorder.lock().expect("recorder lock");
                        match outcome {
                            Ok(()) => recorder.record(started.elapsed()),
                            Err(error) => recorder.record_error(format!("{error:#}")),
                        }
                    }
                });
            }
        })
    };

    // One watch over the run's namespace: bindings, and pods marked Running.
    let timeline = Arc::new(Timeline {
        start: Instant::now(),
        created_at: (0..workload.pods).map(|_| AtomicU64::new(0)).collect(),
        bound_at: (0..workload.pods).map(|_| AtomicU64::new(0)).collect(),
        node_of: Mutex::new(vec![u32::MAX; workload.pods as usize]),
        n_bound: AtomicU64::new(0),
        others_bound_at: Mutex::new(HashMap::new()),
        deleting: Mutex::new(Default::default()),
        rebound: AtomicU64::new(0),
        unknown_node: AtomicU64::new(0),
    });
    let status_recorder = Arc::new(Mutex::new(Recorder::new()));
    let (status_sender, status_receiver) = tokio::sync::mpsc::unbounded_channel::<Kubelet>();
    let status_patcher = {
        let connections = connections.clone();
        let namespace = namespace.clone();
        let status_recorder = Arc::clone(&status_recorder);
        tokio::spawn(async move {
            use futures::StreamExt as _;
            let mut receiver = status_receiver;
            futures::stream::poll_fn(move |context| receiver.poll_recv(context))
                .enumerate()
                .for_each_concurrent(STATUS_CONCURRENCY, |(sequence, action)| {
                    let connection = connections[sequence % connections.len()].clone();
                    let namespace = namespace.clone();
                    let status_recorder = Arc::clone(&status_recorder);
                    async move {
                        let started = Instant::now();
                        let outcome = match action {
                            Kubelet::Run(name) => {
                                let path =
                                    format!("/api/v1/namespaces/{namespace}/pods/{name}/status");
                                merge_patch(&connection, &path, running_status()).await
                            }
                            Kubelet::Delete(name) => {
                                let path = format!("/api/v1/namespaces/{namespace}/pods/{name}");
                                finish_delete(&connection, &path).await
                            }
                        };
                        let mut recorder = status_recorder.lock().expect("recorder lock");
                        match outcome {
                            Ok(()) => recorder.record(started.elapsed()),
                            Err(error) => recorder.record_error(format!("{error:#}")),
                        }
                    }
                })
                .await;
        })
    };
    let watcher = {
        let timeline = Arc::clone(&timeline);
        let watch = PodWatch {
            connection: connections[0].clone(),
            namespace: namespace.clone(),
            node_prefix: format!("hollow-{tag}-"),
            n_nodes: workload.nodes,
            timeline,
            kubelet: status_sender,
        };
        // The first watch is open before any pod is created.
        let first = watch.open("").await?;
        tokio::spawn(watch.run(first))
    };

    // Create the pods, at --rate when given.
    eprintln!("creating {} pods in namespace {namespace}", workload.pods);
    let create_started = Instant::now();
    let creates = {
        let timeline = Arc::clone(&timeline);
        let namespace = namespace.clone();
        let rate = workload.rate;
        in_parallel(workload.pods, workload.concurrency, move |idx| {
            let connection = connection(idx);
            let timeline = Arc::clone(&timeline);
            let path = format!("/api/v1/namespaces/{namespace}/pods");
            async move {
                if rate > 0 {
                    let due = create_started + Duration::from_secs_f64(idx as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let started = Instant::now();
                post(&connection, &path, pod_body(&format!("p-{idx}"))).await?;
                timeline.created_at[idx as usize].store(timeline.now(), Ordering::Relaxed);
                Ok(started.elapsed())
            }
        })
        .await
    };
    let create_duration = create_started.elapsed();

    // Wait for the bindings, giving up when none comes for --stall-timeout.
    let stall = Duration::from_secs(workload.stall_timeout.max(1));
    let mut last_count = 0;
    let mut last_progress = Instant::now();
    let expected = creates.n_ok();
    loop {
        let bound = timeline.n_bound.load(Ordering::Relaxed);
        if bound >= expected {
            break;
        }
        if bound != last_count {
            last_count = bound;
            last_progress = Instant::now();
        } else if last_progress.elapsed() >= stall {
            eprintln!("no binding for {stall:?}: {bound} of {expected} bound");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the Running patches catch up (bounded).
    let catch_up = Instant::now() + Duration::from_secs(30);
    while Instant::now() < catch_up {
        let handled = {
            let recorder = status_recorder.lock().expect("recorder lock");
            recorder.n_ok() + recorder.n_errors()
        };
        if handled >= timeline.n_bound.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deployment = if workload.deployment_replicas > 0 {
        let times = super::hollow_deployment::scale_and_roll(
            &connections[0],
            &namespace,
            &timeline,
            workload.deployment_replicas,
            workload.rolling_update,
            (POD_CPU, POD_MEMORY),
            stall.max(Duration::from_secs(120)),
        )
        .await;
        Some(times)
    } else {
        None
    };
    let mut at_rest = Vec::new();
    if workload.rest_seconds > 0 {
        eprintln!("at rest for {} s", workload.rest_seconds);
        let pids = [
            ("server", workload.server_pid),
            ("controllers", workload.controllers_pid),
        ];
        let before: Vec<Option<f64>> = pids
            .iter()
            .map(|(_, pid)| pid.and_then(cpu_seconds))
            .collect();
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(workload.rest_seconds)).await;
        let elapsed = started.elapsed().as_secs_f64();
        for ((part, pid), before) in pids.iter().zip(before) {
            if let (Some(before), Some(after)) = (before, pid.and_then(cpu_seconds)) {
                at_rest.push((
                    format!("{part}_cpu_percent_at_rest"),
                    (after - before) / elapsed * 100.0,
                ));
            }
        }
    }
    renewing.store(false, Ordering::Relaxed);
    sampling.store(false, Ordering::Relaxed);
    watcher.abort();
    status_patcher.abort();
    let _ = renewer.await;
    let _ = sampler.await;

    // Latencies, and the bound span.
    let mut bound_latency = Recorder::new();
    let (mut first_bound, mut last_bound) = (u64::MAX, 0u64);
    for (created, bound) in timeline.created_at.iter().zip(&timeline.bound_at) {
        let (created, bound) = (
            created.load(Ordering::Relaxed),
            bound.load(Ordering::Relaxed),
        );
        if bound == 0 {
            continue;
        }
        first_bound = first_bound.min(bound);
        last_bound = last_bound.max(bound);
        if created != 0 {
            // A binding seen before its create's answer counts as zero.
            bound_latency.record(Duration::from_nanos(bound.saturating_sub(created)));
        }
    }
    let n_bound = timeline.n_bound.load(Ordering::Relaxed);
    let bound_span = Duration::from_nanos(last_bound.saturating_sub(first_bound.min(last_bound)));
    let mut per_node: HashMap<u32, u64> = HashMap::new();
    for node_idx in timeline.node_of.lock().expect("node lock").iter() {
        if *node_idx != u32::MAX {
            *per_node.entry(*node_idx).or_default() += 1;
        }
    }
    let over_capacity = per_node
        .values()
        .filter(|count| **count > NODE_PODS)
        .count() as u64;
    let mut summary = Summary::new("hollow-nodes")
        .section(Section::new(
            "register hollow nodes (node + lease)",
            registration,
            registration_duration,
        ))
        .section(Section::new("create pods", creates, create_duration))
        .section(Section::new(
            "create to bound (rate: bindings/s, first to last bound)",
            bound_latency,
            bound_span,
        ))
        .section(Section::new(
            "mark pods running (status patch)",
            status_recorder.lock().expect("recorder lock").clone(),
            create_started.elapsed(),
        ))
        .section(Section::new(
            "renew node leases",
            lease_recorder.lock().expect("recorder lock").clone(),
            registration_started.elapsed(),
        ))
        .detail("nodes", workload.nodes)
        .detail("pods", workload.pods)
        .detail("pods_bound", n_bound)
        .detail("pods_unbound", expected.saturating_sub(n_bound))
        .detail("bound_twice", timeline.rebound.load(Ordering::Relaxed))
        .detail(
            "bound_to_unknown_node",
            timeline.unknown_node.load(Ordering::Relaxed),
        )
        .detail("nodes_over_capacity", over_capacity)
        .detail(
            "bindings_per_second",
            if bound_span.is_zero() {
                0.0
            } else {
                n_bound.saturating_sub(1) as f64 / bound_span.as_secs_f64()
            },
        )
        .detail("offered_creates_per_second", workload.rate)
        .detail("namespace", namespace.clone());
    if let Some(times) = deployment {
        let times = times?;
        summary = summary
            .detail("deployment_replicas", workload.deployment_replicas)
            .detail(
                "scale_to_all_bound_seconds",
                times.scale_to_bound.as_secs_f64(),
            )
            .detail(
                "scale_to_all_available_seconds",
                times.scale_to_available.as_secs_f64(),
            );
        if let Some(rollout) = times.rollout {
            summary = summary.detail("rolling_update_seconds", rollout.as_secs_f64());
        }
    }
    for (name, percent) in at_rest {
        summary = summary.detail(&name, percent);
    }
    if let Some(peak) = Some(server_peak_rss.load(Ordering::Relaxed)).filter(|peak| *peak > 0) {
        summary = summary.detail("server_peak_rss_mib", peak as f64 / (1 << 20) as f64);
    }
    if let (Some(before), Some(after)) =
        (server_cpu_before, workload.server_pid.and_then(cpu_seconds))
    {
        summary = summary.detail("server_cpu_seconds", after - before);
    }
    if let Some(peak) = rss_bytes(own_pid, "VmHWM:") {
        summary = summary.detail("bench_peak_rss_mib", peak as f64 / (1 << 20) as f64);
    }
    if let (Some(before), Some(after)) = (own_cpu_before, cpu_seconds(own_pid)) {
        summary = summary.detail("bench_cpu_seconds", after - before);
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_time_is_rfc3339_with_microseconds() {
        let text = now_micro_time();
        assert_eq!(text.len(), "2026-12-07T12:00:00.000000Z".len(), "{text}");
        assert!(text.starts_with("20"), "{text}");
        assert_eq!(&text[10..11], "T");
        assert!(text.ends_with('Z'));
    }
}

//! The Kubernetes API workloads: creates through the API (side by side with
//! the same bytes put straight into the store), timed lists as `kubectl get`
//! makes them, and the delivery of one change to many watchers.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use http::header::{ACCEPT, CONTENT_TYPE};
use proto::etcdserverpb::{PutRequest, RangeRequest};

use crate::kube::{self, KubeConfig, KubeConnection};
use crate::report::{Recorder, Section, Summary};
use crate::runner::{self, Plan};
use crate::{BenchArgs, connect};

/// What `kubectl get` sends: a Table, falling back to a plain list.
const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

/// Where the API server is and which namespace the objects go in.
#[derive(Args, Debug, Clone)]
pub struct KubeApiArgs {
    /// The kubeconfig to connect with (its current context's server, cluster
    /// CA and client certificate).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// The namespace of the objects.
    #[arg(long, default_value = "default")]
    pub namespace: String,
}

/// The kinds the API workloads create.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Resource {
    /// ConfigMaps whose `data` holds `--val-size` bytes.
    Configmaps,
    /// Small Pods (one container, no node: they stay Pending).
    Pods,
}

impl Resource {
    fn plural(self) -> &'static str {
        match self {
            Resource::Configmaps => "configmaps",
            Resource::Pods => "pods",
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct KubeCreateArgs {
    #[command(flatten)]
    pub api: KubeApiArgs,
    /// The kind of object to create.
    #[arg(long, value_enum, default_value_t = Resource::Configmaps)]
    pub resource: Resource,
    /// Total number of creates.
    #[arg(long, default_value_t = 10_000)]
    pub total: u64,
    /// Bytes in each ConfigMap's `data` (one key, `value`); pods ignore it.
    #[arg(long, default_value_t = 1024)]
    pub val_size: usize,
    /// Then put the same bytes straight into the store (`--endpoints`), as
    /// many puts at as many clients: the value the API server stored for the
    /// first object, under `/bench-kv/` (outside `/registry/`, as long).
    #[arg(long)]
    pub compare_store: bool,
    /// Only the store's puts (one object is created through the API first, to
    /// copy its stored bytes): the baseline for the API server's memory.
    #[arg(long, conflicts_with = "compare_store")]
    pub store_only: bool,
    /// Maximum creates per second (0 is no limit).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// The server's process id (shoal up): reports its CPU time per request
    /// in each phase, read from /proc, beside this client's own.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// How a list asks for its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ListAs {
    /// The Table `kubectl get` asks for.
    Table,
    /// A plain JSON list (`kubectl get -o json`, client libraries).
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct KubeListArgs {
    #[command(flatten)]
    pub api: KubeApiArgs,
    /// The kind to list.
    #[arg(long, value_enum, default_value_t = Resource::Pods)]
    pub resource: Resource,
    /// Number of lists.
    #[arg(long, default_value_t = 10)]
    pub total: u64,
    /// Table (as `kubectl get`) or plain JSON.
    #[arg(long = "as", value_enum, default_value_t = ListAs::Table)]
    pub list_as: ListAs,
    /// Objects per page, as kubectl's `--chunk-size` (default 500); one list
    /// is every page, following `continue`. 0 reads everything in one answer.
    #[arg(long, default_value_t = 500)]
    pub limit: u64,
}

#[derive(Args, Debug, Clone)]
pub struct KubeWatchLatencyArgs {
    #[command(flatten)]
    pub api: KubeApiArgs,
    /// Changes made to the one watched ConfigMap (each reaches every watcher;
    /// `--clients` is the number of watchers).
    #[arg(long, default_value_t = 10)]
    pub changes: u64,
    /// Changes per second.
    #[arg(long, default_value_t = 2)]
    pub change_rate: u64,
}

/// User and system CPU time of process `pid` so far, from /proc (Linux
/// counts it in ticks of 1/100 s on every architecture shoal runs on).
fn process_cpu(pid: Option<u32>) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Server CPU per successful request between two readings, in µs.
fn cpu_micros_per_request(
    before: Option<Duration>,
    after: Option<Duration>,
    n_requests: u64,
) -> Option<f64> {
    let spent = after?.checked_sub(before?)?;
    (n_requests > 0).then(|| spent.as_secs_f64() * 1e6 / n_requests as f64)
}

fn to_status(error: anyhow::Error) -> tonic::Status {
    tonic::Status::unknown(format!("{error:#}"))
}

/// The workloads' connections to the API server, one handle per client.
async fn api_connections(
    args: &BenchArgs,
    api: &KubeApiArgs,
    n_conns: usize,
) -> anyhow::Result<Vec<KubeConnection>> {
    let config = KubeConfig::load(&api.kubeconfig)?;
    let dial_timeout = Duration::from_secs(args.dial_timeout.max(1));
    kube::dial_all(&config, n_conns, dial_timeout).await
}

fn per_client(connections: &[KubeConnection], n_clients: usize) -> Vec<KubeConnection> {
    (0..n_clients)
        .map(|client_idx| connections[client_idx % connections.len()].clone())
        .collect()
}

/// A name no earlier run used: runs against the same member do not collide.
fn run_tag() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// `size` random lowercase letters and digits: valid in any JSON string.
fn printable_value(size: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..size)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The JSON body that creates object `name`.
fn object_body(resource: Resource, name: &str, value: &str) -> Bytes {
    let body = match resource {
        Resource::Configmaps => format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"value":"{value}"}}}}"#
        ),
        Resource::Pods => format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{"app":"bench"}}}},"spec":{{"containers":[{{"name":"pause","image":"registry.k8s.io/pause:3.10"}}]}}}}"#
        ),
    };
    Bytes::from(body)
}

pub async fn create(args: &BenchArgs, workload: &KubeCreateArgs) -> anyhow::Result<Summary> {
    let api = &workload.api;
    let resource = workload.resource;
    let connections = api_connections(args, api, args.conns).await?;
    let collection = format!("/api/v1/namespaces/{}/{}", api.namespace, resource.plural());
    let tag = run_tag();
    let value = Arc::new(printable_value(workload.val_size));
    let name = move |request_idx: u64| format!("bench-{tag}-{request_idx}");
    let request_body_bytes = object_body(resource, &name(0), &value).len();
    let create_one = {
        let collection = collection.clone();
        move |connection: KubeConnection, name: String, value: Arc<String>| {
            let collection = collection.clone();
            async move {
                connection
                    .request(
                        http::Method::POST,
                        &collection,
                        &[
                            (CONTENT_TYPE, "application/json"),
                            (ACCEPT, "application/json"),
                        ],
                        Some(object_body(resource, &name, &value)),
                    )
                    .await?
                    .ok()
            }
        }
    };
    let mut summary = Summary::new("kube-create")
        .detail("resource", resource.plural())
        .detail("request_body_bytes", request_body_bytes as u64);
    let api_rate = if workload.store_only {
        // The object whose stored bytes the store's puts copy.
        create_one(connections[0].clone(), name(0), Arc::clone(&value)).await?;
        None
    } else {
        let plan = Plan {
            label: format!("create {}", resource.plural()),
            total: workload.total,
            rate: workload.rate,
            n_classes: 1,
        };
        let create_one = create_one.clone();
        let value = Arc::clone(&value);
        let name = name.clone();
        let cpu_before = process_cpu(workload.server_pid);
        let client_cpu_before = process_cpu(Some(std::process::id()));
        let (recorders, duration) = runner::run(
            plan,
            per_client(&connections, args.clients),
            move |connection, request_idx| {
                let call = create_one(connection.clone(), name(request_idx), Arc::clone(&value));
                Box::pin(async move { call.await.map(|_| 0).map_err(to_status) })
            },
        )
        .await;
        let [recorder] = <[_; 1]>::try_from(recorders).expect("one class");
        let section = Section::new(
            &format!("kube-create {}", resource.plural()),
            recorder,
            duration,
        );
        let rate = section.recorder.n_ok() as f64 / duration.as_secs_f64();
        if let Some(micros) = cpu_micros_per_request(
            cpu_before,
            process_cpu(workload.server_pid),
            section.recorder.n_ok(),
        ) {
            summary = summary.detail("server_cpu_us_per_create", micros);
        }
        if let Some(micros) = cpu_micros_per_request(
            client_cpu_before,
            process_cpu(Some(std::process::id())),
            section.recorder.n_ok(),
        ) {
            summary = summary.detail("client_cpu_us_per_create", micros);
        }
        summary = summary.section(section);
        Some(rate)
    };
    if !(workload.compare_store || workload.store_only) {
        return Ok(summary);
    }

    // The same bytes, straight into the store.
    let dial_timeout = Duration::from_secs(args.dial_timeout.max(1));
    let tls = args.tls()?;
    let targets = connect::targets(
        &args.endpoints,
        args.conns,
        args.target_leader,
        dial_timeout,
        &tls,
    )
    .await?;
    let kv = connect::kv_connections(&targets, dial_timeout, &tls).await?;
    let stored_key = format!(
        "/registry/{}/{}/{}",
        resource.plural(),
        api.namespace,
        name(0)
    );
    let stored = kv[0]
        .clone()
        .range(RangeRequest {
            key: Bytes::from(stored_key.clone().into_bytes()),
            ..Default::default()
        })
        .await
        .map_err(|status| connect::call_error("range", status))?;
    let stored_value = stored
        .kvs
        .first()
        .map(|found| found.value.clone())
        .ok_or_else(|| {
            anyhow::anyhow!("the store holds no {stored_key} after the API created it")
        })?;
    // As long as "/registry/", so that a key costs the store what the API's does.
    let store_prefix = format!("/bench-kv/{}/{}/", resource.plural(), api.namespace);
    let plan = Plan {
        label: "store put".into(),
        total: workload.total,
        rate: workload.rate,
        n_classes: 1,
    };
    let kv_clients: Vec<_> = (0..args.clients)
        .map(|client_idx| kv[client_idx % kv.len()].clone())
        .collect();
    let stored_value_bytes = stored_value.len() as u64;
    let cpu_before = process_cpu(workload.server_pid);
    let client_cpu_before = process_cpu(Some(std::process::id()));
    let (recorders, duration) = runner::run(plan, kv_clients, move |kv, request_idx| {
        let request = PutRequest {
            key: Bytes::from(format!("{store_prefix}{}", name(request_idx)).into_bytes()),
            value: stored_value.clone(),
            ..Default::default()
        };
        Box::pin(async move { kv.put(request).await.map(|_| 0) })
    })
    .await;
    let [recorder] = <[_; 1]>::try_from(recorders).expect("one class");
    let store_rate = recorder.n_ok() as f64 / duration.as_secs_f64();
    if let Some(micros) = cpu_micros_per_request(
        cpu_before,
        process_cpu(workload.server_pid),
        recorder.n_ok(),
    ) {
        summary = summary.detail("server_cpu_us_per_put", micros);
    }
    if let Some(micros) = cpu_micros_per_request(
        client_cpu_before,
        process_cpu(Some(std::process::id())),
        recorder.n_ok(),
    ) {
        summary = summary.detail("client_cpu_us_per_put", micros);
    }
    summary = summary
        .section(Section::new("store put", recorder, duration))
        .detail("stored_value_bytes", stored_value_bytes);
    if let Some(api_rate) = api_rate {
        summary = summary.detail("api_creates_over_store_puts", api_rate / store_rate);
    }
    Ok(summary)
}

/// The `continue` token of a list's answer. kube-apiserver writes the list's
/// metadata first; a server whose JSON keys are sorted writes it last, after
/// `items`. Either way the first or last few KiB hold it (a full parse of a
/// large list would be client time counted against the server).
fn continue_token(body: &[u8]) -> Option<String> {
    const WINDOW: usize = 4096;
    let head = &body[..body.len().min(WINDOW)];
    let tail = &body[body.len().saturating_sub(WINDOW)..];
    token_in(head).or_else(|| token_in(tail))
}

fn token_in(text: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"continue\":\"";
    let start = text.windows(KEY.len()).position(|window| window == KEY)? + KEY.len();
    let length = text[start..].iter().position(|&byte| byte == b'"')?;
    let token = std::str::from_utf8(&text[start..start + length]).ok()?;
    (!token.is_empty()).then(|| token.to_string())
}

/// Reads every page of one list; returns the pages and bytes read.
async fn list_once(
    connection: &KubeConnection,
    collection: &str,
    accept: &str,
    limit: u64,
) -> anyhow::Result<(u64, u64, Bytes)> {
    let mut token: Option<String> = None;
    let (mut pages, mut bytes) = (0, 0);
    loop {
        let mut path = collection.to_string();
        if limit > 0 {
            path.push_str(&format!("?limit={limit}"));
            if let Some(token) = &token {
                path.push_str("&continue=");
                path.extend(form_encode(token));
            }
        }
        let answer = connection
            .request(http::Method::GET, &path, &[(ACCEPT, accept)], None)
            .await?
            .ok()?;
        pages += 1;
        bytes += answer.body.len() as u64;
        token = if limit > 0 {
            continue_token(&answer.body)
        } else {
            None
        };
        if token.is_none() {
            return Ok((pages, bytes, answer.body));
        }
    }
}

/// A query value, percent-encoded (continue tokens are base64).
fn form_encode(value: &str) -> impl Iterator<Item = char> + '_ {
    value.chars().flat_map(|character| {
        let encoded: Vec<char> = if character.is_ascii_alphanumeric() || "-_.~".contains(character)
        {
            vec![character]
        } else {
            let mut buffer = [0u8; 4];
            character
                .encode_utf8(&mut buffer)
                .bytes()
                .flat_map(|byte| format!("%{byte:02X}").chars().collect::<Vec<_>>())
                .collect()
        };
        encoded.into_iter()
    })
}

pub async fn list(args: &BenchArgs, workload: &KubeListArgs) -> anyhow::Result<Summary> {
    let api = &workload.api;
    let connections = api_connections(args, api, args.conns).await?;
    let collection = format!(
        "/api/v1/namespaces/{}/{}",
        api.namespace,
        workload.resource.plural()
    );
    let accept = match workload.list_as {
        ListAs::Table => TABLE_ACCEPT,
        ListAs::Json => "application/json",
    };
    // One list before the run says how much a list reads (and warms up).
    let started = Instant::now();
    let (pages, bytes, last_page) =
        list_once(&connections[0], &collection, accept, workload.limit).await?;
    let first_list_seconds = started.elapsed().as_secs_f64();
    let parsed: serde_json::Value = serde_json::from_slice(&last_page)?;
    let last_page_items = parsed["items"]
        .as_array()
        .or(parsed["rows"].as_array())
        .map_or(0, Vec::len);
    let plan = Plan {
        label: "list".into(),
        total: workload.total,
        rate: 0,
        n_classes: 1,
    };
    let limit = workload.limit;
    let (recorders, duration) = runner::run(
        plan,
        per_client(&connections, args.clients),
        move |connection, _| {
            let collection = collection.clone();
            Box::pin(async move {
                list_once(connection, &collection, accept, limit)
                    .await
                    .map(|_| 0)
                    .map_err(to_status)
            })
        },
    )
    .await;
    let [recorder] = <[_; 1]>::try_from(recorders).expect("one class");
    let name = match workload.list_as {
        ListAs::Table => "kube-list table",
        ListAs::Json => "kube-list json",
    };
    Ok(Summary::new("kube-list")
        .section(Section::new(name, recorder, duration))
        .detail("pages_per_list", pages)
        .detail("bytes_per_list", bytes)
        .detail("last_page_items", last_page_items as u64)
        .detail("first_list_seconds", first_list_seconds))
}

/// What one watcher saw: the latency of each change it received, in µs.
struct Watched {
    latencies_micros: Vec<u64>,
    error: Option<String>,
}

/// Reads a watch stream until it has seen `changes` changes.
async fn watch_changes(
    response: http::Response<h2::RecvStream>,
    sent: Arc<Vec<OnceLock<Instant>>>,
    changes: u64,
) -> Watched {
    let mut watched = Watched {
        latencies_micros: Vec::with_capacity(changes as usize),
        error: None,
    };
    let mut stream = response.into_body();
    let mut pending = Vec::new();
    while (watched.latencies_micros.len() as u64) < changes {
        let chunk = match stream.data().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(error)) => {
                watched.error = Some(format!("watch stream: {error}"));
                return watched;
            }
            None => {
                watched.error = Some("watch stream ended early".into());
                return watched;
            }
        };
        let received = Instant::now();
        let _ = stream.flow_control().release_capacity(chunk.len());
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let Ok(event) = serde_json::from_slice::<serde_json::Value>(&line) else {
                watched.error = Some("watch event is not JSON".into());
                return watched;
            };
            if event["type"] != "MODIFIED" {
                continue;
            }
            let change_idx = event["object"]["data"]["change"]
                .as_str()
                .and_then(|text| text.parse::<usize>().ok());
            if let Some(sent_at) = change_idx.and_then(|idx| sent.get(idx)?.get()) {
                let micros = received.saturating_duration_since(*sent_at).as_micros();
                watched
                    .latencies_micros
                    .push(u64::try_from(micros).unwrap_or(u64::MAX));
            }
        }
    }
    watched
}

pub async fn watch_latency(
    args: &BenchArgs,
    workload: &KubeWatchLatencyArgs,
) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        workload.change_rate >= 1,
        "--change-rate must be at least 1"
    );
    let api = &workload.api;
    // The writer has a connection of its own, as in the etcd watch-latency.
    let mut connections = api_connections(args, api, args.conns + 1).await?;
    let writer = connections.pop().expect("conns + 1 connections");
    let collection = format!("/api/v1/namespaces/{}/configmaps", api.namespace);
    let name = format!("bench-watch-{}", run_tag());
    let created = writer
        .request(
            http::Method::POST,
            &collection,
            &[(CONTENT_TYPE, "application/json"), (ACCEPT, "application/json")],
            Some(Bytes::from(format!(
                r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"change":"none"}}}}"#
            ))),
        )
        .await?
        .ok()?;
    let created: serde_json::Value = serde_json::from_slice(&created.body)?;
    let resource_version = created["metadata"]["resourceVersion"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the created ConfigMap has no resourceVersion"))?
        .to_string();
    let watch_path = format!(
        "{collection}?watch=true&fieldSelector=metadata.name%3D{name}&resourceVersion={resource_version}&timeoutSeconds=3600"
    );

    // Every watcher is open (the server answers a watch's headers once its
    // store watch is made) before the first change.
    let sent: Arc<Vec<OnceLock<Instant>>> =
        Arc::new((0..workload.changes).map(|_| OnceLock::new()).collect());
    let opening = Instant::now();
    let mut watchers = Vec::with_capacity(args.clients);
    let mut open_recorder = Recorder::new();
    let opens = per_client(&connections, args.clients)
        .into_iter()
        .map(|connection| {
            let watch_path = watch_path.clone();
            async move {
                let started = Instant::now();
                let response = connection
                    .open(
                        http::Method::GET,
                        &watch_path,
                        &[(ACCEPT, "application/json")],
                        None,
                    )
                    .await;
                (response, started.elapsed())
            }
        });
    // A server that limits streams per connection (hyper: 200 by default)
    // holds the watches over its limit back for good: say so, not hang.
    let open_timeout = Duration::from_secs(args.dial_timeout.max(1) * 6);
    let opened = tokio::time::timeout(open_timeout, futures::future::join_all(opens))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "{} watches not open after {} s: over the server's concurrent streams per connection? (more --conns)",
                args.clients,
                open_timeout.as_secs()
            )
        })?;
    for (response, latency) in opened {
        let response = response?;
        anyhow::ensure!(
            response.status().is_success(),
            "watch: HTTP {}",
            response.status()
        );
        open_recorder.record(latency);
        watchers.push(tokio::spawn(watch_changes(
            response,
            Arc::clone(&sent),
            workload.changes,
        )));
    }
    let open_duration = opening.elapsed();

    let bar = crate::progress::bar("change", workload.changes);
    let mut change_recorder = Recorder::new();
    let started = Instant::now();
    for change_idx in 0..workload.changes {
        let slot = Duration::from_secs_f64(change_idx as f64 / workload.change_rate as f64);
        tokio::time::sleep_until((started + slot).into()).await;
        let patch = Bytes::from(format!(r#"{{"data":{{"change":"{change_idx}"}}}}"#));
        let change_started = Instant::now();
        let _ = sent[change_idx as usize].set(change_started);
        let outcome = writer
            .request(
                http::Method::PATCH,
                &format!("{collection}/{name}"),
                &[
                    (CONTENT_TYPE, "application/merge-patch+json"),
                    (ACCEPT, "application/json"),
                ],
                Some(patch),
            )
            .await
            .and_then(kube::Answer::ok);
        match outcome {
            Ok(_) => change_recorder.record(change_started.elapsed()),
            Err(error) => change_recorder.record_error(format!("{error:#}")),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    // Every event has had time to arrive when the last one is 10 s late.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut delivery = Recorder::new();
    for mut watcher in watchers {
        match tokio::time::timeout_at(deadline, &mut watcher).await {
            Ok(Ok(watched)) => {
                for micros in &watched.latencies_micros {
                    delivery.record(Duration::from_micros(*micros));
                }
                let missing = workload.changes - watched.latencies_micros.len() as u64;
                for _ in 0..missing {
                    delivery.record_error(
                        watched
                            .error
                            .clone()
                            .unwrap_or_else(|| "event not delivered".into()),
                    );
                }
            }
            Ok(Err(error)) => delivery.record_error(format!("watcher failed: {error}")),
            Err(_) => {
                watcher.abort();
                delivery.record_error("events not delivered within 10 s of the last change");
            }
        }
    }
    let delivery_duration = started.elapsed();
    Ok(Summary::new("kube-watch-latency")
        .section(Section::new("watch open", open_recorder, open_duration))
        .section(Section::new(
            "change (PATCH)",
            change_recorder,
            delivery_duration,
        ))
        .section(Section::new("event delivery", delivery, delivery_duration))
        .detail("watchers", args.clients as u64)
        .detail("changes", workload.changes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_token_is_read_from_the_list_metadata() {
        let page = br#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"7","continue":"eyJ2Ijo1fQ=="},"items":[]}"#;
        assert_eq!(continue_token(page).as_deref(), Some("eyJ2Ijo1fQ=="));
        let last = br#"{"kind":"PodList","metadata":{"resourceVersion":"7"},"items":[]}"#;
        assert_eq!(continue_token(last), None);
        let sorted = format!(
            r#"{{"apiVersion":"v1","items":[{}],"kind":"PodList","metadata":{{"continue":"abc","resourceVersion":"7"}}}}"#,
            "{},".repeat(5000) + "{}"
        );
        assert_eq!(continue_token(sorted.as_bytes()).as_deref(), Some("abc"));
        let empty = br#"{"metadata":{"continue":""},"items":[]}"#;
        assert_eq!(continue_token(empty), None);
        assert_eq!(form_encode("a+b/=").collect::<String>(), "a%2Bb%2F%3D");
    }

    #[test]
    fn this_process_has_spent_cpu() {
        let pid = std::process::id();
        assert!(process_cpu(Some(pid)).is_some());
        assert_eq!(process_cpu(None), None);
        let second = Some(Duration::from_secs(1));
        assert_eq!(
            cpu_micros_per_request(Some(Duration::ZERO), second, 4),
            Some(250_000.0)
        );
    }

    #[test]
    fn bodies_are_json() {
        for resource in [Resource::Configmaps, Resource::Pods] {
            let body = object_body(resource, "bench-1", &printable_value(16));
            let object: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(object["metadata"]["name"], "bench-1");
        }
    }
}

//! `hollow-nodes --deployment-replicas N [--rolling-update]`: the
//! controllers' speed on hollow nodes. A Deployment of hollow pods is made
//! with 0 replicas and scaled to N; timed are the scale's answer to the
//! last of its pods seen bound, and to the Deployment reporting all N
//! available. Then, with `--rolling-update`, its template is changed (an
//! annotation) and timed is the change's answer to the rollout complete as
//! `kubectl rollout status` judges it: the new generation observed, all N
//! replicas updated and available, no old replica left. The hollow kubelet
//! marks bound pods Running and Ready and finishes their deletions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};

use super::hollow::Timeline;
use crate::kube::KubeConnection;

/// The Deployment's name in the run's namespace.
const NAME: &str = "hollow-web";

/// What the phase measured.
pub struct DeploymentTimes {
    pub scale_to_bound: Duration,
    pub scale_to_available: Duration,
    pub rollout: Option<Duration>,
}

fn deployment_body(namespace: &str, cpu: &str, memory: &str) -> Bytes {
    Bytes::from(
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": NAME, "namespace": namespace},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": NAME}},
                "strategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {
                    "metadata": {"labels": {"app": NAME}},
                    "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                        "resources": {"requests": {"cpu": cpu, "memory": memory}}}]},
                },
            },
        })
        .to_string(),
    )
}

async fn send(
    connection: &KubeConnection,
    method: http::Method,
    path: &str,
    content_type: &str,
    body: Option<Bytes>,
) -> anyhow::Result<Value> {
    let answer = connection
        .request(
            method,
            path,
            &[(CONTENT_TYPE, content_type), (ACCEPT, "application/json")],
            body,
        )
        .await?
        .ok()?;
    Ok(serde_json::from_slice(&answer.body)?)
}

fn number(value: &Value, pointer: &str) -> i64 {
    value.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// Polls the Deployment until `done` says so, or `limit` passes.
async fn wait_for(
    connection: &KubeConnection,
    path: &str,
    limit: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let deployment = send(
            connection,
            http::Method::GET,
            path,
            "application/json",
            None,
        )
        .await?;
        if done(&deployment) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}; the Deployment's status: {}",
            deployment["status"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Counts the Deployment's pods seen bound since `since` (timeline time).
fn bound_since(timeline: &Timeline, since: u64) -> (usize, u64) {
    let others = timeline.others_bound_at.lock().expect("others lock");
    let prefix = format!("{NAME}-");
    let mut count = 0;
    let mut last = 0;
    for (name, at) in others.iter() {
        if name.starts_with(&prefix) && *at >= since {
            count += 1;
            last = last.max(*at);
        }
    }
    (count, last)
}

/// Scales a new Deployment from 0 to `replicas`, then (with `rolling`)
/// rolls it to a new template, timing both.
pub async fn scale_and_roll(
    connection: &KubeConnection,
    namespace: &str,
    timeline: &Arc<Timeline>,
    replicas: u64,
    rolling: bool,
    (cpu, memory): (&str, &str),
    limit: Duration,
) -> anyhow::Result<DeploymentTimes> {
    let collection = format!("/apis/apps/v1/namespaces/{namespace}/deployments");
    let path = format!("{collection}/{NAME}");
    send(
        connection,
        http::Method::POST,
        &collection,
        "application/json",
        Some(deployment_body(namespace, cpu, memory)),
    )
    .await
    .context("cannot create the Deployment")?;
    // The controllers have seen it (its first generation observed).
    wait_for(connection, &path, limit, "the Deployment observed", |d| {
        number(d, "/status/observedGeneration") >= number(d, "/metadata/generation")
    })
    .await?;

    eprintln!("scaling Deployment {NAME} from 0 to {replicas}");
    let scale_started_at = timeline.now();
    let scale_started = Instant::now();
    let scaled = send(
        connection,
        http::Method::PATCH,
        &path,
        "application/merge-patch+json",
        Some(Bytes::from(
            json!({"spec": {"replicas": replicas}}).to_string(),
        )),
    )
    .await
    .context("cannot scale the Deployment")?;
    let scaled_generation = number(&scaled, "/metadata/generation");
    let deadline = Instant::now() + limit;
    let bound_at = loop {
        let (count, last) = bound_since(timeline, scale_started_at);
        if count as u64 >= replicas {
            break last;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {count} of {replicas} pods bound within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let scale_to_bound = Duration::from_nanos(bound_at.saturating_sub(scale_started_at));
    wait_for(connection, &path, limit, "all replicas available", |d| {
        number(d, "/status/observedGeneration") >= scaled_generation
            && number(d, "/status/availableReplicas") == replicas as i64
    })
    .await?;
    let scale_to_available = scale_started.elapsed();

    let rollout = if rolling {
        eprintln!("rolling Deployment {NAME}'s {replicas} replicas to a new template");
        let started = Instant::now();
        let changed = send(
            connection,
            http::Method::PATCH,
            &path,
            "application/merge-patch+json",
            Some(Bytes::from(
                json!({"spec": {"template": {"metadata": {"annotations": {"bench.shoal.io/revision": "2"}}}}})
                    .to_string(),
            )),
        )
        .await
        .context("cannot change the Deployment's template")?;
        let generation = number(&changed, "/metadata/generation");
        let n = replicas as i64;
        wait_for(connection, &path, limit, "the rollout", |d| {
            number(d, "/status/observedGeneration") >= generation
                && number(d, "/status/updatedReplicas") == n
                && number(d, "/status/replicas") == n
                && number(d, "/status/availableReplicas") == n
        })
        .await?;
        Some(started.elapsed())
    } else {
        None
    };
    Ok(DeploymentTimes {
        scale_to_bound,
        scale_to_available,
        rollout,
    })
}

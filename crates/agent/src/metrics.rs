//! The node agent's `/metrics` on its HTTPS port, with kubelet's names:
//! `kubelet_running_pods`, `kubelet_running_containers{container_state}`,
//! the per-pod `pod_cpu_usage_seconds_total` and
//! `pod_memory_working_set_bytes` of kubelet's resource metrics (from the
//! pods' cgroups, the runtime's usage calls), and each container's restarts
//! (`kubelet_container_restarts_total`, from its attempt number). Read from
//! the runtime at the scrape.

use std::sync::Arc;

use metrics::prometheus_client::collector::Collector;
use metrics::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use metrics::prometheus_client::metrics::counter::ConstCounter;
use metrics::prometheus_client::metrics::gauge::ConstGauge;
use runtime::pod::{ContainerStatus, PodError, PodRuntime};

/// One pod as a scrape sees it.
#[derive(Debug)]
pub struct PodRow {
    namespace: String,
    name: String,
    cpu_seconds: Option<f64>,
    memory_working_set_bytes: Option<u64>,
    /// (container name, restarts).
    restarts: Vec<(String, u32)>,
}

/// The node's pods and containers at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    pods: Vec<PodRow>,
    /// Containers by state: created, running, exited.
    containers_by_state: [i64; 3],
}

/// Reads the runtime: its sandboxes, their containers' states and the pods'
/// usage. Blocking (the runtime's calls are).
pub fn read(runtime: &PodRuntime) -> Result<Snapshot, PodError> {
    let mut snapshot = Snapshot::default();
    for sandbox in runtime.list()? {
        let usage = runtime.pod_stats(&sandbox.uid).ok();
        let mut restarts: Vec<(String, u32)> = Vec::new();
        for container in &sandbox.containers {
            let state_idx = match container.status {
                ContainerStatus::Created => 0,
                ContainerStatus::Running { .. } => 1,
                _ => 2,
            };
            snapshot.containers_by_state[state_idx] += 1;
            match restarts
                .iter_mut()
                .find(|(name, _)| *name == container.name)
            {
                Some((_, attempts)) => *attempts = (*attempts).max(container.attempt),
                None => restarts.push((container.name.clone(), container.attempt)),
            }
        }
        snapshot.pods.push(PodRow {
            namespace: sandbox.namespace,
            name: sandbox.name,
            cpu_seconds: usage
                .as_ref()
                .and_then(|usage| usage.cpu_usage_nanos)
                .map(|nanos| nanos as f64 / 1e9),
            memory_working_set_bytes: usage.and_then(|usage| usage.memory_working_set_bytes),
            restarts,
        });
    }
    Ok(snapshot)
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let running_pods = ConstGauge::new(self.pods.len() as i64);
        running_pods.encode(encoder.encode_descriptor(
            "kubelet_running_pods",
            "Number of pods that have a running pod sandbox",
            None,
            running_pods.metric_type(),
        )?)?;
        {
            let gauge_type = ConstGauge::new(0i64).metric_type();
            let mut family = encoder.encode_descriptor(
                "kubelet_running_containers",
                "Number of containers currently running",
                None,
                gauge_type,
            )?;
            for (state, count) in ["created", "running", "exited"]
                .iter()
                .zip(self.containers_by_state)
            {
                let labels = [("container_state", *state)];
                ConstGauge::new(count).encode(family.encode_family(&labels)?)?;
            }
        }
        {
            let counter_type = ConstCounter::new(0u64).metric_type();
            let mut family = encoder.encode_descriptor(
                "pod_cpu_usage_seconds",
                "Cumulative cpu time consumed by the pod in core-seconds",
                None,
                counter_type,
            )?;
            for pod in &self.pods {
                if let Some(seconds) = pod.cpu_seconds {
                    let labels = [
                        ("namespace", pod.namespace.as_str()),
                        ("pod", pod.name.as_str()),
                    ];
                    ConstCounter::new(seconds).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let gauge_type = ConstGauge::new(0i64).metric_type();
            let mut family = encoder.encode_descriptor(
                "pod_memory_working_set_bytes",
                "Current working set of the pod in bytes",
                None,
                gauge_type,
            )?;
            for pod in &self.pods {
                if let Some(bytes) = pod.memory_working_set_bytes {
                    let labels = [
                        ("namespace", pod.namespace.as_str()),
                        ("pod", pod.name.as_str()),
                    ];
                    ConstGauge::new(bytes as i64).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let counter_type = ConstCounter::new(0u64).metric_type();
            let mut family = encoder.encode_descriptor(
                "kubelet_container_restarts",
                "Restarts of each container of the node's pods",
                None,
                counter_type,
            )?;
            for pod in &self.pods {
                for (container, restarts) in &pod.restarts {
                    let labels = [
                        ("namespace", pod.namespace.as_str()),
                        ("pod", pod.name.as_str()),
                        ("container", container.as_str()),
                    ];
                    ConstCounter::new(u64::from(*restarts))
                        .encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

/// The scrape's body and content type.
pub fn render(snapshot: Snapshot, accept: Option<&str>) -> (&'static str, String) {
    let endpoint = metrics::Endpoint::with_process_metrics();
    let mut registry = metrics::Registry::default();
    registry.register_collector(Box::new(snapshot));
    endpoint.add(Arc::new(registry));
    endpoint.render(accept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_renders_kubelets_names() {
        let snapshot = Snapshot {
            pods: vec![PodRow {
                namespace: "default".into(),
                name: "web-1".into(),
                cpu_seconds: Some(1.5),
                memory_working_set_bytes: Some(4096),
                restarts: vec![("app".into(), 2)],
            }],
            containers_by_state: [0, 1, 0],
        };
        let (_, text) = render(snapshot, None);
        assert!(text.contains("kubelet_running_pods 1\n"), "{text}");
        assert!(text.contains("kubelet_running_containers{container_state=\"running\"} 1\n"));
        assert!(
            text.contains("pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"web-1\"} 1.5\n")
        );
        assert!(
            text.contains(
                "pod_memory_working_set_bytes{namespace=\"default\",pod=\"web-1\"} 4096\n"
            )
        );
        assert!(text.contains("kubelet_container_restarts_total{namespace=\"default\",pod=\"web-1\",container=\"app\"} 2\n"));

        // promtool (Debian's prometheus package, from scripts/install-deps)
        // finds nothing to lint.
        use std::io::Write as _;
        let mut promtool = std::process::Command::new("/usr/bin/promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run promtool");
        promtool
            .stdin
            .take()
            .expect("promtool's stdin")
            .write_all(text.as_bytes())
            .expect("feed promtool");
        let output = promtool.wait_with_output().expect("wait for promtool");
        assert!(
            output.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

//! Events about pods, as kubelet records them: core/v1 Events with source
//! `kubelet` on this node, so `kubectl describe pod` lists them. A repeat of
//! the same reason and message on the same object counts up one Event
//! rather than making another.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};

/// Records events in the order they happen: one writer task takes them
/// from a queue.
#[derive(Clone)]
pub struct Events {
    queue: tokio::sync::mpsc::UnboundedSender<Pending>,
}

struct Pending {
    namespace: String,
    name: String,
    uid: String,
    reference: ObjectReference,
    warning: bool,
    reason: String,
    message: String,
}

struct Writer {
    client: kube::Client,
    node: String,
    /// The Event last written per object, reason and message, with its
    /// count.
    seen: HashMap<(String, String, String), (String, i32)>,
}

impl Events {
    /// Starts the writer (on the current tokio runtime).
    pub fn new(client: kube::Client, node: String) -> Events {
        let (queue, mut pending) = tokio::sync::mpsc::unbounded_channel::<Pending>();
        let mut writer = Writer {
            client,
            node,
            seen: HashMap::new(),
        };
        tokio::spawn(async move {
            while let Some(event) = pending.recv().await {
                if let Err(error) = writer.write(&event).await {
                    tracing::debug!(%error, reason = %event.reason, "cannot record an event");
                }
            }
        });
        Events { queue }
    }

    /// Records an event on `pod` (a `Warning` when `warning`), in the
    /// background: an event that cannot be written is logged, not retried.
    pub fn pod(&self, pod: &Pod, warning: bool, reason: &str, message: String) {
        self.pod_field(pod, None, warning, reason, message);
    }

    /// The same, about one of the pod's containers (`spec.containers{name}`).
    pub fn pod_field(
        &self,
        pod: &Pod,
        field: Option<String>,
        warning: bool,
        reason: &str,
        message: String,
    ) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            uid: Some(uid.clone()),
            resource_version: pod.metadata.resource_version.clone(),
            field_path: field,
        };
        let _ = self.queue.send(Pending {
            namespace,
            name,
            uid,
            reference,
            warning,
            reason: reason.to_string(),
            message,
        });
    }
}

impl Writer {
    async fn write(&mut self, event: &Pending) -> Result<(), kube::Error> {
        let Pending {
            namespace,
            name,
            uid,
            reference,
            warning,
            reason,
            message,
        } = event;
        let (namespace, name, uid, reason, message) = (
            namespace.as_str(),
            name.as_str(),
            uid.as_str(),
            reason.as_str(),
            message.as_str(),
        );
        let reference = reference.clone();
        let warning = *warning;
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let now = k8s_openapi::jiff::Timestamp::now();
        let key = (
            uid.to_string(),
            reason.to_string(),
            format!(
                "{}|{message}",
                reference.field_path.clone().unwrap_or_default()
            ),
        );
        let repeat = self.seen.get(&key).cloned();
        if let Some((event_name, count)) = repeat {
            let patch = serde_json::json!({
                "count": count + 1,
                "lastTimestamp": Time(now),
            });
            if api
                .patch(&event_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .is_ok()
            {
                self.seen.insert(key, (event_name, count + 1));
                return Ok(());
            }
        }
        let event_name = format!(
            "{name}.{:x}",
            now.as_nanosecond() as u64 ^ rand_suffix(reason, message)
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(event_name.clone()),
                namespace: Some(namespace.to_string()),
                ..ObjectMeta::default()
            },
            involved_object: reference,
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(if warning { "Warning" } else { "Normal" }.to_string()),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some(self.node.clone()),
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            event_time: None::<MicroTime>,
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(self.node.clone()),
            ..Event::default()
        };
        api.create(&PostParams::default(), &event).await?;
        if self.seen.len() > 10_000 {
            self.seen.clear();
        }
        self.seen.insert(key, (event_name, 1));
        Ok(())
    }
}

fn rand_suffix(reason: &str, message: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    reason.hash(&mut hasher);
    message.hash(&mut hasher);
    std::time::Instant::now().hash(&mut hasher);
    hasher.finish()
}

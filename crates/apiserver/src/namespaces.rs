//! The namespaces, known in memory: every create checks that its namespace
//! exists and is not being deleted (kube-apiserver's namespace lifecycle
//! check reads an informer's cache too). A list, then a watch from its
//! revision, keeps the index current; a namespace the index has not seen
//! yet is looked up in the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use parking_lot::RwLock;
use serde_json::Value;

use crate::storage;

const PREFIX: &str = "/registry/namespaces/";

/// A namespace as creates need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    Active,
    Terminating,
}

fn state_of(object: &Value) -> Namespace {
    if object.pointer("/metadata/deletionTimestamp").is_some() {
        Namespace::Terminating
    } else {
        Namespace::Active
    }
}

#[derive(Default)]
pub struct Namespaces {
    known: RwLock<HashMap<String, Namespace>>,
}

impl Namespaces {
    /// The namespace `name`, if the index has seen it.
    pub fn get(&self, name: &str) -> Option<Namespace> {
        self.known.read().get(name).copied()
    }

    /// Keeps the index in step with the store until the store client is gone.
    pub async fn follow(self: Arc<Self>, kv: client::SharedKv) {
        loop {
            let (items, revision) = match storage::list(kv.as_ref(), PREFIX, 0, false).await {
                Ok(listed) => listed,
                Err(error) => {
                    tracing::debug!(message = %error.message, "namespace index list failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            *self.known.write() = items
                .iter()
                .map(|item| {
                    (
                        crate::objects::name_of(&item.object).to_string(),
                        state_of(&item.object),
                    )
                })
                .collect();
            let request = client::WatchRequest {
                key: PREFIX.as_bytes().to_vec(),
                range_end: client::prefix_end(PREFIX.as_bytes()),
                start_revision: revision + 1,
                prev_kv: false,
            };
            let Ok(mut updates) = kv.watch(request).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            while let Some(Ok(update)) = updates.next().await {
                let client::WatchUpdate::Events { events, .. } = update else {
                    continue;
                };
                let mut known = self.known.write();
                for event in events {
                    let Some(kv) = event.kv else { continue };
                    let key = String::from_utf8_lossy(&kv.key);
                    let name = key.trim_start_matches(PREFIX).to_string();
                    if event.r#type == proto::mvccpb::event::EventType::Delete as i32 {
                        known.remove(&name);
                    } else if let Ok(object) = serde_json::from_slice::<Value>(&kv.value) {
                        known.insert(name, state_of(&object));
                    }
                }
            }
        }
    }
}

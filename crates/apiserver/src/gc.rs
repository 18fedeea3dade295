//! Deletion: finalizers, graceful pod deletion, propagation over
//! `ownerReferences` (Background, Foreground, Orphan), namespaces that take
//! their contents with them, and the garbage collector that carries out
//! what a delete leaves to do. Also the PodDisruptionBudget check of an
//! eviction.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::Api;
use crate::objects::{self, uid_of};
use crate::registry::ResourceType;
use crate::status::ApiError;
use crate::storage::{self, Stored, Written};

/// What a delete did.
pub enum Deleted {
    /// The object is gone.
    Gone,
    /// The object is marked for deletion; finalizers or a node finish it.
    Pending(Value),
    /// The object changed under the delete; read it again.
    Raced,
}

/// Work the collector does after a delete.
#[derive(Debug)]
pub enum Work {
    /// Delete what `owner_uid` owned (Background propagation).
    Dependents {
        namespace: Option<String>,
        owner_uid: String,
    },
    /// Delete what a namespace holds, then the namespace.
    Namespace { name: String },
    /// Delete an owner's dependents, then the owner (Foreground propagation).
    Foreground {
        resource: Arc<ResourceType>,
        key: String,
    },
}

fn finalizers(object: &Value) -> Vec<String> {
    objects::strings_at(object, "/metadata/finalizers")
}

/// Marks `object` deleted at `deletion_time` and stores it.
async fn mark_deleting(
    api: &Api,
    key: &str,
    current: &Stored,
    mut object: Value,
    grace_seconds: i64,
    dry_run: bool,
) -> Result<Deleted, ApiError> {
    let metadata = objects::metadata_mut(&mut object);
    if metadata.get("deletionTimestamp").is_none() {
        let when = std::time::SystemTime::now()
            + std::time::Duration::from_secs(grace_seconds.max(0) as u64);
        metadata.insert(
            "deletionTimestamp".to_string(),
            json!(humantime::format_rfc3339_seconds(when).to_string()),
        );
        metadata.insert(
            "deletionGracePeriodSeconds".to_string(),
            json!(grace_seconds),
        );
    }
    if dry_run {
        return Ok(Deleted::Pending(object));
    }
    match storage::put_if(api.kv.as_ref(), key, &object, current.mod_revision).await? {
        Written::Done(revision) => {
            objects::metadata_mut(&mut object)
                .insert("resourceVersion".to_string(), json!(revision.to_string()));
            Ok(Deleted::Pending(object))
        }
        Written::Lost => Ok(Deleted::Raced),
    }
}

/// Deletes one object as `propagation` says.
#[allow(clippy::too_many_arguments)]
pub async fn delete_one(
    api: &Api,
    resource: &ResourceType,
    key: &str,
    current: &Stored,
    propagation: &str,
    grace_period_seconds: Option<i64>,
    dry_run: bool,
) -> Result<Deleted, ApiError> {
    let object = current.object.clone();
    let already_deleting = object.pointer("/metadata/deletionTimestamp").is_some();
    let is_namespace = resource.group.is_empty() && resource.kind == "Namespace";
    if is_namespace {
        if crate::SYSTEM_NAMESPACES.contains(&objects::name_of(&object)) {
            return Err(ApiError {
                code: 403,
                reason: "Forbidden",
                message: format!(
                    "namespaces \"{}\" is forbidden: this namespace may not be deleted",
                    objects::name_of(&object)
                ),
                details: None,
            });
        }
        let mut object = object;
        object["status"]["phase"] = json!("Terminating");
        let outcome = mark_deleting(api, key, current, object, 0, dry_run).await?;
        if !dry_run && matches!(outcome, Deleted::Pending(_)) {
            api.collect(Work::Namespace {
                name: objects::name_of(&current.object).to_string(),
            });
        }
        return Ok(outcome);
    }
    let is_pod = resource.group.is_empty() && resource.kind == "Pod";
    // A pod already ending is deleted now by a delete with no grace left:
    // its node agent's, once its containers stopped (or a forced one).
    if already_deleting && !(is_pod && grace_period_seconds == Some(0)) {
        return Ok(Deleted::Pending(object));
    }
    // A pod on a node ends gracefully: the node's agent stops it and
    // finishes the delete.
    let on_node = object
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|node| !node.is_empty());
    let grace = grace_period_seconds.unwrap_or_else(|| {
        object
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(30)
    });
    if is_pod && on_node && grace > 0 {
        return mark_deleting(api, key, current, object, grace, dry_run).await;
    }
    if propagation == "Orphan" && !dry_run {
        orphan_dependents(
            api,
            object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str),
            uid_of(&object),
        )
        .await?;
    }
    if propagation == "Foreground" {
        let mut object = object;
        let metadata = objects::metadata_mut(&mut object);
        let mut list = finalizers(&current.object);
        if !list
            .iter()
            .any(|finalizer| finalizer == "foregroundDeletion")
        {
            list.push("foregroundDeletion".to_string());
        }
        metadata.insert("finalizers".to_string(), json!(list));
        let outcome = mark_deleting(api, key, current, object, 0, dry_run).await?;
        if !dry_run && matches!(outcome, Deleted::Pending(_)) {
            api.collect(Work::Foreground {
                resource: Arc::new(resource.clone()),
                key: key.to_string(),
            });
        }
        return Ok(outcome);
    }
    if !finalizers(&object).is_empty() {
        return mark_deleting(api, key, current, object, 0, dry_run).await;
    }
    if dry_run {
        return Ok(Deleted::Gone);
    }
    match storage::delete_if(api.kv.as_ref(), key, current.mod_revision).await? {
        Written::Done(_) => {
            crate::registry_sync::after_delete(api, resource, &object);
            if propagation == "Background" {
                api.collect(Work::Dependents {
                    namespace: object
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    owner_uid: uid_of(&object).to_string(),
                });
            }
            Ok(Deleted::Gone)
        }
        Written::Lost => Ok(Deleted::Raced),
    }
}

fn owned_by(object: &Value, owner_uid: &str) -> bool {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|owners| {
            owners
                .iter()
                .any(|owner| owner.get("uid").and_then(Value::as_str) == Some(owner_uid))
        })
}

/// Every object that names `owner_uid` as an owner, with its resource.
async fn dependents(
    api: &Api,
    namespace: Option<&str>,
    owner_uid: &str,
) -> Result<Vec<(Arc<ResourceType>, Stored)>, ApiError> {
    let mut found = Vec::new();
    let mut seen_storage = std::collections::HashSet::new();
    for resource in api.registry.all() {
        // Two resources can share storage (never today, but be safe).
        if !seen_storage.insert(resource.storage.clone()) {
            continue;
        }
        let prefix =
            crate::handlers::list_prefix(&resource, namespace.filter(|_| resource.namespaced));
        let (items, _) = storage::list(api.kv.as_ref(), &prefix, 0, false).await?;
        for item in items {
            if owned_by(&item.object, owner_uid) {
                found.push((Arc::clone(&resource), item));
            }
        }
    }
    Ok(found)
}

async fn orphan_dependents(
    api: &Api,
    namespace: Option<&str>,
    owner_uid: &str,
) -> Result<(), ApiError> {
    for (_, mut item) in dependents(api, namespace, owner_uid).await? {
        for _ in 0..5 {
            let mut object = item.object.clone();
            if let Some(owners) = object
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                owners.retain(|owner| owner.get("uid").and_then(Value::as_str) != Some(owner_uid));
            }
            match storage::put_if(api.kv.as_ref(), &item.key, &object, item.mod_revision).await? {
                Written::Done(_) => break,
                Written::Lost => match storage::get(api.kv.as_ref(), &item.key).await? {
                    Some(again) => item = again,
                    None => break,
                },
            }
        }
    }
    Ok(())
}

/// Carries out one piece of collector work; returns work to retry later.
pub async fn run(api: &Arc<Api>, work: Work) -> Result<Option<Work>, ApiError> {
    match work {
        Work::Dependents {
            namespace,
            owner_uid,
        } => {
            for (resource, item) in dependents(api, namespace.as_deref(), &owner_uid).await? {
                // A dependent with another owner left stays, minus this one.
                let other_owners = item
                    .object
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|owners| {
                        owners.iter().any(|owner| {
                            owner.get("uid").and_then(Value::as_str) != Some(&owner_uid)
                        })
                    });
                if other_owners {
                    orphan_dependents(api, namespace.as_deref(), &owner_uid).await?;
                    continue;
                }
                let _ =
                    delete_one(api, &resource, &item.key, &item, "Background", None, false).await?;
            }
            Ok(None)
        }
        Work::Foreground { resource, key } => {
            let Some(owner) = storage::get(api.kv.as_ref(), &key).await? else {
                return Ok(None);
            };
            let namespace = owner
                .object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_string);
            let owner_uid = uid_of(&owner.object).to_string();
            let remaining = dependents(api, namespace.as_deref(), &owner_uid).await?;
            if !remaining.is_empty() {
                for (dependent_resource, item) in remaining {
                    let _ = delete_one(
                        api,
                        &dependent_resource,
                        &item.key,
                        &item,
                        "Foreground",
                        None,
                        false,
                    )
                    .await?;
                }
                return Ok(Some(Work::Foreground { resource, key }));
            }
            let mut object = owner.object.clone();
            let list: Vec<String> = finalizers(&object)
                .into_iter()
                .filter(|finalizer| finalizer != "foregroundDeletion")
                .collect();
            objects::metadata_mut(&mut object).insert("finalizers".to_string(), json!(list));
            let outcome = if list.is_empty() {
                storage::delete_if(api.kv.as_ref(), &key, owner.mod_revision).await?
            } else {
                storage::put_if(api.kv.as_ref(), &key, &object, owner.mod_revision).await?
            };
            match outcome {
                Written::Done(_) => Ok(None),
                Written::Lost => Ok(Some(Work::Foreground { resource, key })),
            }
        }
        Work::Namespace { name } => {
            let mut left = 0;
            for resource in api.registry.all() {
                if !resource.namespaced {
                    continue;
                }
                let prefix = crate::handlers::list_prefix(&resource, Some(&name));
                let (items, _) = storage::list(api.kv.as_ref(), &prefix, 0, false).await?;
                for item in items {
                    left += 1;
                    // Pods go at once: no node agent will finish them here.
                    let _ = delete_one(
                        api,
                        &resource,
                        &item.key,
                        &item,
                        "Background",
                        Some(0),
                        false,
                    )
                    .await?;
                }
            }
            if left > 0 {
                return Ok(Some(Work::Namespace { name }));
            }
            let key = format!("/registry/namespaces/{name}");
            if let Some(namespace) = storage::get(api.kv.as_ref(), &key).await?
                && let Written::Lost =
                    storage::delete_if(api.kv.as_ref(), &key, namespace.mod_revision).await?
            {
                return Ok(Some(Work::Namespace { name }));
            }
            Ok(None)
        }
    }
}

/// Why an eviction must wait, if a PodDisruptionBudget covering the pod
/// allows no disruption now (computed from the pods' readiness).
pub async fn eviction_refusal(
    api: &Api,
    namespace: Option<&str>,
    pod_name: &str,
) -> Result<Option<String>, ApiError> {
    let Some(namespace) = namespace else {
        return Ok(None);
    };
    let Some(pod) = storage::get(
        api.kv.as_ref(),
        &format!("/registry/pods/{namespace}/{pod_name}"),
    )
    .await?
    else {
        return Ok(None);
    };
    let labels = objects::labels_of(&pod.object);
    let (budgets, _) = storage::list(
        api.kv.as_ref(),
        &format!("/registry/poddisruptionbudgets/{namespace}/"),
        0,
        false,
    )
    .await?;
    let (pods, _) = storage::list(
        api.kv.as_ref(),
        &format!("/registry/pods/{namespace}/"),
        0,
        false,
    )
    .await?;
    for budget in budgets {
        let Some(selector) = budget.object.pointer("/spec/selector") else {
            continue;
        };
        let Ok(selector) = apimachinery::labels::Selector::from_label_selector(selector) else {
            continue;
        };
        if !selector.matches(&labels) {
            continue;
        }
        let covered: Vec<&Stored> = pods
            .iter()
            .filter(|candidate| selector.matches(&objects::labels_of(&candidate.object)))
            .collect();
        let expected = covered.len() as i64;
        // Pods being deleted are no longer counted healthy (as upstream's
        // disruption controller), so an eviction sees the ones before it.
        let healthy = covered
            .iter()
            .filter(|candidate| {
                candidate
                    .object
                    .pointer("/metadata/deletionTimestamp")
                    .is_none()
                    && is_ready(&candidate.object)
            })
            .count() as i64;
        let desired = if let Some(min) = budget.object.pointer("/spec/minAvailable") {
            scaled(min, expected, true)
        } else if let Some(max) = budget.object.pointer("/spec/maxUnavailable") {
            expected - scaled(max, expected, true)
        } else {
            expected
        };
        if healthy - desired <= 0 {
            return Ok(Some(
                "Cannot evict pod as it would violate the pod's disruption budget.".to_string(),
            ));
        }
    }
    Ok(None)
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|conditions| {
            conditions.iter().any(|condition| {
                condition.get("type").and_then(Value::as_str) == Some("Ready")
                    && condition.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// An int-or-percent of `total`, rounded up as the disruption controller does.
fn scaled(value: &Value, total: i64, round_up: bool) -> i64 {
    match value {
        Value::Number(number) => number.as_i64().unwrap_or(0),
        Value::String(text) => {
            let percent: i64 = text.trim_end_matches('%').parse().unwrap_or(0);
            let product = percent * total;
            if round_up {
                (product + 99) / 100
            } else {
                product / 100
            }
        }
        _ => 0,
    }
}

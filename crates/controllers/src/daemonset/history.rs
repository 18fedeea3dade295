//! A DaemonSet's history, sans IO: one ControllerRevision per template it
//! has had (`<name>-<hash>`, the template as a replacing patch, numbered
//! in order), as upstream keeps them for `kubectl rollout history` and
//! `rollout undo`. The current template's revision is the newest; old
//! ones no pod uses are pruned beyond `revisionHistoryLimit`.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;

use super::core::REVISION_HASH;

/// What to write to the history.
#[derive(Debug, Default, PartialEq)]
pub struct HistoryPlan {
    /// The current template's revision, when there is none yet.
    pub create: Option<ControllerRevision>,
    /// The current template's revision exists but is not the newest (a
    /// rollback): renumber it (name, new number).
    pub renumber: Option<(String, i64)>,
    /// Old revisions to delete.
    pub delete: Vec<String>,
}

fn hash_of(revision: &ControllerRevision) -> Option<&str> {
    revision
        .metadata
        .labels
        .as_ref()?
        .get(REVISION_HASH)
        .map(String::as_str)
}

/// The revision object for the DaemonSet's current template.
pub fn revision_for(
    daemon_set: &DaemonSet,
    hash: &str,
    number: i64,
    owner: OwnerReference,
) -> ControllerRevision {
    let name = daemon_set.metadata.name.clone().unwrap_or_default();
    let template = daemon_set
        .spec
        .as_ref()
        .map(|spec| spec.template.clone())
        .unwrap_or_default();
    let mut template = serde_json::to_value(&template).unwrap_or_default();
    if let Some(object) = template.as_object_mut() {
        object.insert("$patch".to_string(), serde_json::json!("replace"));
    }
    let mut labels = daemon_set
        .spec
        .as_ref()
        .and_then(|spec| spec.template.metadata.as_ref())
        .and_then(|meta| meta.labels.clone())
        .unwrap_or_default();
    labels.insert(REVISION_HASH.to_string(), hash.to_string());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{hash}")),
            namespace: daemon_set.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(
            serde_json::json!({"spec": {"template": template}}),
        )),
        revision: number,
    }
}

/// What to do with `revisions` (the DaemonSet's own) so the current
/// template (`hash`) has the newest revision, keeping at most the
/// history limit of old ones that no pod in `hashes_in_use` runs.
pub fn plan(
    daemon_set: &DaemonSet,
    hash: &str,
    revisions: &[Arc<ControllerRevision>],
    hashes_in_use: &BTreeSet<String>,
    owner: OwnerReference,
) -> HistoryPlan {
    let mut plan = HistoryPlan::default();
    let newest = revisions
        .iter()
        .map(|revision| revision.revision)
        .max()
        .unwrap_or(0);
    match revisions
        .iter()
        .find(|revision| hash_of(revision) == Some(hash))
    {
        None => plan.create = Some(revision_for(daemon_set, hash, newest + 1, owner)),
        Some(current) if current.revision < newest => {
            plan.renumber = Some((
                current.metadata.name.clone().unwrap_or_default(),
                newest + 1,
            ));
        }
        Some(_) => {}
    }
    let limit = daemon_set
        .spec
        .as_ref()
        .and_then(|spec| spec.revision_history_limit)
        .unwrap_or(10)
        .max(0) as usize;
    let mut old: Vec<&Arc<ControllerRevision>> = revisions
        .iter()
        .filter(|revision| {
            hash_of(revision).is_none_or(|revision_hash| {
                revision_hash != hash && !hashes_in_use.contains(revision_hash)
            })
        })
        .collect();
    if old.len() > limit {
        old.sort_by_key(|revision| revision.revision);
        plan.delete = old[..old.len() - limit]
            .iter()
            .map(|revision| revision.metadata.name.clone().unwrap_or_default())
            .collect();
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DaemonSetSpec;

    fn daemon_set(limit: i32) -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            spec: Some(DaemonSetSpec {
                revision_history_limit: Some(limit),
                ..DaemonSetSpec::default()
            }),
            status: None,
        }
    }

    fn stored(daemon_set: &DaemonSet, hash: &str, number: i64) -> Arc<ControllerRevision> {
        Arc::new(revision_for(
            daemon_set,
            hash,
            number,
            OwnerReference::default(),
        ))
    }

    #[test]
    fn a_new_template_gets_the_next_revision_and_old_ones_are_pruned() {
        let daemon_set = daemon_set(1);
        let first = plan(
            &daemon_set,
            "aaa",
            &[],
            &BTreeSet::new(),
            OwnerReference::default(),
        );
        let created = first.create.expect("a first revision");
        assert_eq!(created.revision, 1);
        assert_eq!(created.metadata.name.as_deref(), Some("agent-aaa"));
        let data = &created.data.as_ref().unwrap().0;
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        // Restarted after the write: nothing more to do.
        let revisions = vec![Arc::new(created)];
        assert_eq!(
            plan(
                &daemon_set,
                "aaa",
                &revisions,
                &BTreeSet::new(),
                OwnerReference::default()
            ),
            HistoryPlan::default()
        );
        // Two template changes later, with a limit of one old revision
        // and pods still on "bbb": "aaa" goes.
        let revisions = vec![
            stored(&daemon_set, "aaa", 1),
            stored(&daemon_set, "bbb", 2),
            stored(&daemon_set, "ccc", 3),
        ];
        let in_use: BTreeSet<String> = ["bbb".to_string()].into();
        let pruned = plan(
            &daemon_set,
            "ccc",
            &revisions,
            &in_use,
            OwnerReference::default(),
        );
        assert_eq!(pruned.create, None);
        assert!(
            pruned.delete.is_empty(),
            "one old revision unused is within the limit"
        );
        let pruned = plan(
            &daemon_set,
            "ccc",
            &revisions,
            &BTreeSet::new(),
            OwnerReference::default(),
        );
        assert_eq!(pruned.delete, ["agent-aaa"]);
    }

    #[test]
    fn going_back_to_an_old_template_renumbers_its_revision() {
        let daemon_set = daemon_set(10);
        let revisions = vec![stored(&daemon_set, "aaa", 1), stored(&daemon_set, "bbb", 2)];
        let back = plan(
            &daemon_set,
            "aaa",
            &revisions,
            &BTreeSet::new(),
            OwnerReference::default(),
        );
        assert_eq!(back.renumber, Some(("agent-aaa".to_string(), 3)));
        assert_eq!(back.create, None);
    }
}

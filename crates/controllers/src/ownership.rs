//! Owner references: which object controls which (`ownerReferences` with
//! `controller: true`), as controllers set and read them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

/// The owner reference marked `controller: true`, if any (there is at most one).
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|owner| owner.controller == Some(true))
}

/// The uid of the object's controller, if any.
pub fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    controller_of(meta).map(|owner| owner.uid.as_str())
}

/// A controller reference to `owner` (with `blockOwnerDeletion`, so a
/// foreground deletion of the owner waits for the dependent).
pub fn controller_reference<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    let meta = owner.meta();
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSet;

    #[test]
    fn a_controller_reference_names_its_owner() {
        let owner = ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web-abc".into()),
                uid: Some("u1".into()),
                ..ObjectMeta::default()
            },
            ..ReplicaSet::default()
        };
        let reference = controller_reference(&owner);
        assert_eq!(reference.api_version, "apps/v1");
        assert_eq!(reference.kind, "ReplicaSet");
        let meta = ObjectMeta {
            owner_references: Some(vec![
                OwnerReference {
                    uid: "other".into(),
                    ..OwnerReference::default()
                },
                reference,
            ]),
            ..ObjectMeta::default()
        };
        assert_eq!(controller_uid(&meta), Some("u1"));
    }
}

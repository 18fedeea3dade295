//! The clusterrole-aggregation controller: a ClusterRole with an
//! `aggregationRule` holds the union of the rules of the ClusterRoles its
//! selectors match, kept up to date as those change (`admin` gathers
//! `edit`, which gathers `view`, which gathers every role labelled
//! `rbac.authorization.k8s.io/aggregate-to-view: "true"`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::rbac::{ClusterRole, Rule};

/// The rules each aggregated role should hold now, for those whose rules
/// differ from that.
pub fn pending(roles: &HashMap<String, ClusterRole>) -> Vec<(String, Vec<Rule>)> {
    let mut names: Vec<&String> = roles.keys().collect();
    names.sort();
    let mut changes = Vec::new();
    for name in &names {
        let role = &roles[*name];
        let Some(selectors) = &role.aggregation else {
            continue;
        };
        let selectors: Vec<apimachinery::labels::Selector> = selectors
            .iter()
            .filter_map(|selector| {
                apimachinery::labels::Selector::from_label_selector(selector).ok()
            })
            .collect();
        let mut rules: Vec<Rule> = Vec::new();
        for other in &names {
            if other == name {
                continue;
            }
            let candidate = &roles[*other];
            if !selectors
                .iter()
                .any(|selector| selector.matches(&candidate.labels))
            {
                continue;
            }
            for rule in candidate.rules.iter() {
                if !rules.contains(rule) {
                    rules.push(rule.clone());
                }
            }
        }
        if rules.as_slice() != &*role.rules {
            changes.push(((*name).clone(), rules));
        }
    }
    changes
}

/// Runs the controller until the API's store client is gone: after every
/// change of a ClusterRole, writes the aggregated roles that are behind.
pub async fn run(authorizer: Arc<super::Authorizer>, kv: client::SharedKv) {
    authorizer.rbac.wait_loaded().await;
    loop {
        // Changes come in bursts (bootstrap writes a dozen roles): settle first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for (name, rules) in pending(&authorizer.rbac.cluster_roles()) {
            let key = format!("{}{name}", super::rbac::Kind::ClusterRole.prefix());
            let stored = match crate::storage::get(kv.as_ref(), &key).await {
                Ok(Some(stored)) => stored,
                Ok(None) => continue,
                Err(error) => {
                    tracing::debug!(role = %name, message = %error.message, "cannot read an aggregated ClusterRole");
                    continue;
                }
            };
            let mut object = stored.object;
            object["rules"] = Value::Array(rules.iter().map(Rule::to_json).collect());
            if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                metadata.remove("resourceVersion");
            }
            match crate::storage::put_if(kv.as_ref(), &key, &object, stored.mod_revision).await {
                Ok(_) => {
                    tracing::debug!(role = %name, n_rules = rules.len(), "aggregated ClusterRole updated")
                }
                Err(error) => {
                    tracing::debug!(role = %name, message = %error.message, "cannot write an aggregated ClusterRole")
                }
            }
        }
        // A lost write shows as another change and comes round again.
        authorizer.rbac.cluster_roles_changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::rbac::{Index, Kind};
    use serde_json::json;

    #[test]
    fn aggregated_roles_gather_matching_roles_in_chains() {
        let index = Index::default();
        for role in crate::authz::bootstrap::cluster_roles() {
            let name = role["metadata"]["name"].as_str().unwrap().to_string();
            index.apply(
                Kind::ClusterRole,
                &format!("/registry/clusterroles/{name}"),
                Some(&role),
            );
        }
        index.apply(
            Kind::ClusterRole,
            "/registry/clusterroles/crontabs-view",
            Some(&json!({"metadata": {"name": "crontabs-view",
                "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
                "rules": [{"apiGroups": ["example.com"], "resources": ["crontabs"], "verbs": ["get"]}]})),
        );
        // Apply the controller's writes until nothing is pending, as the
        // store's watch would feed them back.
        for _ in 0..5 {
            let pending = pending(&index.cluster_roles());
            if pending.is_empty() {
                break;
            }
            for (name, rules) in pending {
                let object = json!({"metadata": {"name": name},
                    "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {
                        format!("rbac.authorization.k8s.io/aggregate-to-{name}"): "true"}}]},
                    "rules": rules.iter().map(Rule::to_json).collect::<Vec<_>>()});
                let mut object = object;
                if name == "edit" {
                    object["metadata"]["labels"] =
                        json!({"rbac.authorization.k8s.io/aggregate-to-admin": "true"});
                }
                if name == "view" {
                    object["metadata"]["labels"] =
                        json!({"rbac.authorization.k8s.io/aggregate-to-edit": "true"});
                }
                index.apply(
                    Kind::ClusterRole,
                    &format!("/registry/clusterroles/{name}"),
                    Some(&object),
                );
            }
        }
        assert!(pending(&index.cluster_roles()).is_empty());
        let roles = index.cluster_roles();
        let crontabs = Rule::from_json(
            &json!({"apiGroups": ["example.com"], "resources": ["crontabs"], "verbs": ["get"]}),
        );
        for name in ["view", "edit", "admin"] {
            assert!(
                roles[name].rules.contains(&crontabs),
                "{name} lacks the aggregated rule"
            );
        }
        let secrets_write = |name: &str| {
            roles[name].rules.iter().any(|rule| {
                rule.resources.contains(&"secrets".to_string())
                    && rule.verbs.contains(&"create".to_string())
            })
        };
        assert!(!secrets_write("view"));
        assert!(secrets_write("edit"));
        assert!(secrets_write("admin"));
        assert!(
            roles["admin"]
                .rules
                .iter()
                .any(|rule| rule.resources.contains(&"rolebindings".to_string()))
        );
        assert!(
            !roles["edit"]
                .rules
                .iter()
                .any(|rule| rule.resources.contains(&"rolebindings".to_string()))
        );
    }
}

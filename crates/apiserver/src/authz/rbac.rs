//! RBAC (`rbac.authorization.k8s.io/v1`): Roles, ClusterRoles and their
//! bindings, held in memory by subject so that a check is a few hash
//! look-ups — the user's and each group's bindings at the cluster scope and
//! in the request's namespace, then their roles' rules. The index follows
//! the four kinds through the watch cache (`follow`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde_json::Value;

use super::{Attributes, Decision};
use crate::cache::{Caches, ChangeKind};
use crate::objects;

pub const GROUP: &str = "rbac.authorization.k8s.io";

/// One `PolicyRule`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(value: &Value, field: &str) -> Vec<String> {
    value
        .get(field)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn has(list: &[String], wanted: &str) -> bool {
    list.iter().any(|item| item == "*" || item == wanted)
}

impl Rule {
    pub fn from_json(rule: &Value) -> Rule {
        Rule {
            verbs: strings(rule, "verbs"),
            api_groups: strings(rule, "apiGroups"),
            resources: strings(rule, "resources"),
            resource_names: strings(rule, "resourceNames"),
            non_resource_urls: strings(rule, "nonResourceURLs"),
        }
    }

    pub fn to_json(&self) -> Value {
        let mut rule = serde_json::Map::new();
        for (field, list) in [
            ("verbs", &self.verbs),
            ("apiGroups", &self.api_groups),
            ("resources", &self.resources),
            ("resourceNames", &self.resource_names),
            ("nonResourceURLs", &self.non_resource_urls),
        ] {
            if !list.is_empty() || field == "verbs" {
                rule.insert(field.into(), list.clone().into());
            }
        }
        Value::Object(rule)
    }

    /// Whether this rule allows the request (kube-apiserver's `RuleAllows`).
    pub fn allows(&self, attributes: &Attributes<'_>) -> bool {
        if !has(&self.verbs, attributes.verb) {
            return false;
        }
        if !attributes.resource_request {
            return self.non_resource_urls.iter().any(|url| {
                url == "*"
                    || url == attributes.path
                    || url
                        .strip_suffix('*')
                        .is_some_and(|prefix| attributes.path.starts_with(prefix))
            });
        }
        if !has(&self.api_groups, attributes.api_group) {
            return false;
        }
        let resource_matches = self.resources.iter().any(|resource| {
            if resource == "*" {
                return true;
            }
            if attributes.subresource.is_empty() {
                return resource == attributes.resource;
            }
            // `pods/log`, or `*/log` for that subresource of anything.
            match resource.split_once('/') {
                Some((parent, sub)) => {
                    sub == attributes.subresource
                        && (parent == attributes.resource || parent == "*")
                }
                None => false,
            }
        });
        resource_matches
            && (self.resource_names.is_empty()
                || self
                    .resource_names
                    .iter()
                    .any(|name| name == attributes.name))
    }
}

/// Whom a binding names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Subject {
    User(String),
    Group(String),
}

/// Where a binding points.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RoleRef {
    ClusterRole(String),
    Role(String),
}

#[derive(Debug, Clone)]
struct Binding {
    role: RoleRef,
    subjects: Vec<Subject>,
}

impl Binding {
    fn from_json(object: &Value, namespace: &str) -> Option<Binding> {
        let kind = object.pointer("/roleRef/kind")?.as_str()?;
        let name = object.pointer("/roleRef/name")?.as_str()?.to_string();
        let role = match kind {
            "ClusterRole" => RoleRef::ClusterRole(name),
            "Role" => RoleRef::Role(name),
            _ => return None,
        };
        let subjects = object
            .get("subjects")
            .and_then(Value::as_array)
            .map(|subjects| {
                subjects
                    .iter()
                    .filter_map(|subject| {
                        let name = subject.get("name")?.as_str()?;
                        match subject.get("kind")?.as_str()? {
                            "User" => Some(Subject::User(name.to_string())),
                            "Group" => Some(Subject::Group(name.to_string())),
                            "ServiceAccount" => {
                                let account_namespace = subject
                                    .get("namespace")
                                    .and_then(Value::as_str)
                                    .filter(|namespace| !namespace.is_empty())
                                    .unwrap_or(namespace);
                                Some(Subject::User(format!(
                                    "system:serviceaccount:{account_namespace}:{name}"
                                )))
                            }
                            _ => None,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Binding { role, subjects })
    }
}

/// The bindings of one scope (the cluster, or one namespace), by subject.
#[derive(Default)]
struct Scope {
    bindings: HashMap<String, Binding>,
    by_user: HashMap<String, Vec<String>>,
    by_group: HashMap<String, Vec<String>>,
}

impl Scope {
    fn remove(&mut self, name: &str) {
        let Some(binding) = self.bindings.remove(name) else {
            return;
        };
        for subject in &binding.subjects {
            let (map, key) = match subject {
                Subject::User(user) => (&mut self.by_user, user),
                Subject::Group(group) => (&mut self.by_group, group),
            };
            if let Some(names) = map.get_mut(key) {
                names.retain(|bound| bound != name);
                if names.is_empty() {
                    map.remove(key);
                }
            }
        }
    }

    fn insert(&mut self, name: &str, binding: Binding) {
        self.remove(name);
        for subject in &binding.subjects {
            let (map, key) = match subject {
                Subject::User(user) => (&mut self.by_user, user),
                Subject::Group(group) => (&mut self.by_group, group),
            };
            let names = map.entry(key.clone()).or_default();
            if !names.iter().any(|bound| bound == name) {
                names.push(name.to_string());
            }
        }
        self.bindings.insert(name.to_string(), binding);
    }
}

/// A ClusterRole as the index keeps it.
#[derive(Debug, Clone)]
pub struct ClusterRole {
    pub rules: Arc<[Rule]>,
    pub labels: BTreeMap<String, String>,
    /// The `aggregationRule`'s selectors, for the aggregation controller.
    pub aggregation: Option<Vec<Value>>,
}

#[derive(Default)]
struct State {
    cluster_roles: HashMap<String, ClusterRole>,
    /// Roles by namespace, then name.
    roles: HashMap<String, HashMap<String, Arc<[Rule]>>>,
    /// ClusterRoleBindings under "", RoleBindings under their namespace.
    scopes: HashMap<String, Scope>,
}

/// The four kinds, as the index follows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ClusterRole,
    Role,
    ClusterRoleBinding,
    RoleBinding,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::ClusterRole,
        Kind::Role,
        Kind::ClusterRoleBinding,
        Kind::RoleBinding,
    ];

    /// The store prefix of the kind's objects (kube-apiserver's keys).
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::ClusterRole => "/registry/clusterroles/",
            Kind::Role => "/registry/roles/",
            Kind::ClusterRoleBinding => "/registry/clusterrolebindings/",
            Kind::RoleBinding => "/registry/rolebindings/",
        }
    }
}

/// The RBAC objects in memory.
#[derive(Default)]
pub struct Index {
    state: RwLock<State>,
    /// Kinds whose first list has been read.
    loaded: parking_lot::Mutex<u8>,
    loaded_notify: tokio::sync::Notify,
    /// Raised when a ClusterRole changes (the aggregation controller waits on it).
    pub cluster_roles_changed: tokio::sync::Notify,
}

fn rules_of(object: &Value) -> Arc<[Rule]> {
    object
        .get("rules")
        .and_then(Value::as_array)
        .map(|rules| rules.iter().map(Rule::from_json).collect::<Vec<_>>())
        .unwrap_or_default()
        .into()
}

impl Index {
    /// Records `object` (None: the object at `key` is gone).
    pub fn apply(&self, kind: Kind, key: &str, object: Option<&Value>) {
        let mut state = self.state.write();
        let relative = key.strip_prefix(kind.prefix()).unwrap_or(key);
        let (namespace, name) = match kind {
            Kind::ClusterRole | Kind::ClusterRoleBinding => ("", relative),
            Kind::Role | Kind::RoleBinding => relative.split_once('/').unwrap_or(("", relative)),
        };
        match (kind, object) {
            (Kind::ClusterRole, Some(object)) => {
                let aggregation = object
                    .pointer("/aggregationRule/clusterRoleSelectors")
                    .and_then(Value::as_array)
                    .cloned();
                state.cluster_roles.insert(
                    name.to_string(),
                    ClusterRole {
                        rules: rules_of(object),
                        labels: objects::labels_of(object),
                        aggregation,
                    },
                );
            }
            (Kind::ClusterRole, None) => {
                state.cluster_roles.remove(name);
            }
            (Kind::Role, Some(object)) => {
                state
                    .roles
                    .entry(namespace.to_string())
                    .or_default()
                    .insert(name.to_string(), rules_of(object));
            }
            (Kind::Role, None) => {
                if let Some(roles) = state.roles.get_mut(namespace) {
                    roles.remove(name);
                }
            }
            (Kind::ClusterRoleBinding | Kind::RoleBinding, Some(object)) => {
                let scope = state.scopes.entry(namespace.to_string()).or_default();
                match Binding::from_json(object, namespace) {
                    Some(binding) => scope.insert(name, binding),
                    None => scope.remove(name),
                }
            }
            (Kind::ClusterRoleBinding | Kind::RoleBinding, None) => {
                if let Some(scope) = state.scopes.get_mut(namespace) {
                    scope.remove(name);
                }
            }
        }
        drop(state);
        if kind == Kind::ClusterRole {
            self.cluster_roles_changed.notify_one();
        }
    }

    /// Replaces every object of `kind` (a fresh list).
    fn reset(&self, kind: Kind, objects: &[(String, Value)]) {
        {
            let mut state = self.state.write();
            match kind {
                Kind::ClusterRole => state.cluster_roles.clear(),
                Kind::Role => state.roles.clear(),
                Kind::ClusterRoleBinding => {
                    state.scopes.remove("");
                }
                Kind::RoleBinding => state.scopes.retain(|namespace, _| namespace.is_empty()),
            }
        }
        for (key, object) in objects {
            self.apply(kind, key, Some(object));
        }
    }

    fn mark_loaded(&self, kind: Kind) {
        let bit = 1 << Kind::ALL.iter().position(|each| *each == kind).unwrap_or(0);
        *self.loaded.lock() |= bit;
        self.loaded_notify.notify_waiters();
    }

    /// Waits until every kind's first list is in the index.
    pub async fn wait_loaded(&self) {
        loop {
            let notified = self.loaded_notify.notified();
            if *self.loaded.lock() == 0b1111 {
                return;
            }
            notified.await;
        }
    }

    /// The ClusterRoles now (for aggregation).
    pub fn cluster_roles(&self) -> HashMap<String, ClusterRole> {
        self.state.read().cluster_roles.clone()
    }

    /// Calls `visit` with every rule that applies to `user` in `namespace`
    /// (the cluster scope's bindings always, the namespace's when given),
    /// until it returns true. Bindings to missing roles are reported in
    /// `missing` as kube-apiserver words them.
    pub fn visit_rules(
        &self,
        user: &crate::server::User,
        namespace: &str,
        missing: &mut Vec<String>,
        mut visit: impl FnMut(&Rule) -> bool,
    ) -> bool {
        let state = self.state.read();
        let scopes = [
            ("", state.scopes.get("")),
            (namespace, state.scopes.get(namespace)),
        ];
        let scopes = if namespace.is_empty() {
            &scopes[..1]
        } else {
            &scopes[..]
        };
        for (scope_namespace, scope) in scopes {
            let Some(scope) = scope else { continue };
            let names = scope
                .by_user
                .get(user.name.as_str())
                .into_iter()
                .flatten()
                .chain(
                    user.groups
                        .iter()
                        .filter_map(|group| scope.by_group.get(group.as_str()))
                        .flatten(),
                );
            for binding_name in names {
                let Some(binding) = scope.bindings.get(binding_name) else {
                    continue;
                };
                let rules = match &binding.role {
                    RoleRef::ClusterRole(name) => match state.cluster_roles.get(name) {
                        Some(role) => &role.rules,
                        None => {
                            missing.push(format!(
                                "clusterrole.rbac.authorization.k8s.io {name:?} not found"
                            ));
                            continue;
                        }
                    },
                    RoleRef::Role(name) => match state
                        .roles
                        .get(*scope_namespace)
                        .and_then(|roles| roles.get(name))
                    {
                        Some(rules) => rules,
                        None => {
                            missing
                                .push(format!("role.rbac.authorization.k8s.io {name:?} not found"));
                            continue;
                        }
                    },
                };
                if rules.iter().any(&mut visit) {
                    return true;
                }
            }
        }
        false
    }

    /// RBAC's decision (kube-apiserver's `RBACAuthorizer.Authorize`).
    pub fn authorize(&self, attributes: &Attributes<'_>) -> Decision {
        let mut missing = Vec::new();
        if self.visit_rules(
            attributes.user,
            attributes.namespace,
            &mut missing,
            |rule| rule.allows(attributes),
        ) {
            return Decision::Allow;
        }
        Decision::Deny(match missing.len() {
            0 => String::new(),
            1 => format!("RBAC: {}", missing[0]),
            _ => format!("RBAC: [{}]", missing.join(", ")),
        })
    }
}

/// Keeps `index` current: for each kind, the watch cache's changes after a
/// list read at the cache's revision; a new list when the cache resyncs or
/// this follower falls behind.
pub async fn follow(index: Arc<super::Authorizer>, caches: Arc<Caches>, kv: client::SharedKv) {
    let mut tasks = Vec::new();
    for kind in Kind::ALL {
        let authorizer = Arc::clone(&index);
        let caches = Arc::clone(&caches);
        let kv = Arc::clone(&kv);
        tasks.push(tokio::spawn(async move {
            follow_prefix(kind.prefix(), &caches, &kv, |event| match event {
                Event::Reset(objects) => {
                    authorizer.rbac.reset(kind, &objects);
                    authorizer.rbac.mark_loaded(kind);
                }
                Event::Put(key, object) => authorizer.rbac.apply(kind, &key, Some(&object)),
                Event::Delete(key) => authorizer.rbac.apply(kind, &key, None),
            })
            .await
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// What a follower of a prefix is told.
pub enum Event {
    /// Every object under the prefix now, as (key, object).
    Reset(Vec<(String, Value)>),
    Put(String, Value),
    Delete(String),
}

/// Follows the objects under `prefix` through its watch cache until the
/// store client is gone: a list at the cache's revision, then its changes.
pub async fn follow_prefix(
    prefix: &str,
    caches: &Caches,
    kv: &client::SharedKv,
    mut handle: impl FnMut(Event),
) {
    loop {
        let cache = caches.get(prefix);
        let Ok(mut subscription) = cache.subscribe(None).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let revision = subscription.revision;
        let listed = match crate::storage::list(kv.as_ref(), prefix, revision, false).await {
            Ok((items, _)) => items,
            Err(error) => {
                tracing::debug!(%prefix, message = %error.message, "authorization index list failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        handle(Event::Reset(
            listed
                .into_iter()
                .map(|stored| (stored.key, stored.object))
                .collect(),
        ));
        loop {
            let change = match subscription.live.recv().await {
                Ok(change) => change,
                // Behind or cut off: list again.
                Err(_) => break,
            };
            if change.revision <= revision {
                continue;
            }
            match change.kind {
                ChangeKind::Resync => break,
                ChangeKind::Deleted => handle(Event::Delete(change.key.clone())),
                ChangeKind::Added | ChangeKind::Modified => {
                    if let Some(object) = change.object() {
                        handle(Event::Put(change.key.clone(), (*object).clone()));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::User;
    use serde_json::json;

    fn user(name: &str, groups: &[&str]) -> User {
        User {
            name: name.into(),
            groups: groups.iter().map(|group| group.to_string()).collect(),
        }
    }

    fn attributes<'a>(
        user: &'a User,
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        subresource: &'a str,
        namespace: &'a str,
        name: &'a str,
    ) -> Attributes<'a> {
        Attributes {
            user,
            verb,
            resource_request: true,
            path: "",
            api_group: group,
            api_version: "v1",
            namespace,
            resource,
            subresource,
            name,
        }
    }

    fn index() -> Index {
        let index = Index::default();
        index.apply(
            Kind::ClusterRole,
            "/registry/clusterroles/reader",
            Some(&json!({"metadata": {"name": "reader"}, "rules": [
                {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]},
                {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["web"], "verbs": ["*"]},
                {"nonResourceURLs": ["/healthz", "/openapi/*"], "verbs": ["get"]}
            ]})),
        );
        index.apply(
            Kind::Role,
            "/registry/roles/team/secrets",
            Some(
                &json!({"metadata": {"name": "secrets", "namespace": "team"}, "rules": [
                    {"apiGroups": ["*"], "resources": ["*/status", "secrets"], "verbs": ["get"]}
                ]}),
            ),
        );
        index.apply(
            Kind::RoleBinding,
            "/registry/rolebindings/team/bob-reads",
            Some(&json!({"metadata": {"name": "bob-reads", "namespace": "team"},
                "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "reader"},
                "subjects": [{"kind": "User", "name": "bob"}, {"kind": "ServiceAccount", "name": "builder"}]})),
        );
        index.apply(
            Kind::RoleBinding,
            "/registry/rolebindings/team/devs-secrets",
            Some(
                &json!({"metadata": {"name": "devs-secrets", "namespace": "team"},
                "roleRef": {"apiGroup": GROUP, "kind": "Role", "name": "secrets"},
                "subjects": [{"kind": "Group", "name": "devs"}]}),
            ),
        );
        index.apply(
            Kind::ClusterRoleBinding,
            "/registry/clusterrolebindings/ops",
            Some(&json!({"metadata": {"name": "ops"},
                "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "reader"},
                "subjects": [{"kind": "Group", "name": "ops"}]})),
        );
        index
    }

    #[test]
    fn bindings_grant_their_roles_in_their_scope() {
        let index = index();
        let bob = user("bob", &["system:authenticated"]);
        let allowed = |attributes: Attributes<'_>| index.authorize(&attributes) == Decision::Allow;
        assert!(allowed(attributes(
            &bob, "list", "", "pods", "", "team", ""
        )));
        assert!(allowed(attributes(
            &bob, "get", "", "pods", "log", "team", "p"
        )));
        assert!(!allowed(attributes(
            &bob, "get", "", "pods", "exec", "team", "p"
        )));
        assert!(!allowed(attributes(
            &bob, "delete", "", "pods", "", "team", "p"
        )));
        assert!(!allowed(attributes(
            &bob, "list", "", "pods", "", "other", ""
        )));
        assert!(!allowed(attributes(&bob, "list", "", "pods", "", "", "")));
        assert!(allowed(attributes(
            &bob,
            "delete",
            "apps",
            "deployments",
            "",
            "team",
            "web"
        )));
        assert!(!allowed(attributes(
            &bob,
            "delete",
            "apps",
            "deployments",
            "",
            "team",
            "api"
        )));
        assert!(!allowed(attributes(
            &bob,
            "list",
            "apps",
            "deployments",
            "",
            "team",
            ""
        )));
        let builder = user("system:serviceaccount:team:builder", &[]);
        assert!(allowed(attributes(
            &builder, "get", "", "pods", "", "team", "p"
        )));
        let dev = user("dan", &["devs"]);
        assert!(allowed(attributes(
            &dev, "get", "", "secrets", "", "team", "s"
        )));
        assert!(allowed(attributes(
            &dev,
            "get",
            "apps",
            "deployments",
            "status",
            "team",
            "d"
        )));
        assert!(!allowed(attributes(
            &dev,
            "get",
            "apps",
            "deployments",
            "",
            "team",
            "d"
        )));
        let operator = user("olga", &["ops"]);
        assert!(allowed(attributes(
            &operator, "list", "", "pods", "", "", ""
        )));
        assert!(allowed(attributes(
            &operator, "list", "", "pods", "", "any", ""
        )));
        let mut health = attributes(&operator, "get", "", "", "", "", "");
        health.resource_request = false;
        health.path = "/healthz";
        assert!(allowed(health));
        health.path = "/openapi/v3/apis";
        assert!(allowed(health));
        health.path = "/metrics";
        assert!(!allowed(health));
    }

    #[test]
    fn removed_bindings_and_missing_roles() {
        let index = index();
        let bob = user("bob", &[]);
        index.apply(
            Kind::RoleBinding,
            "/registry/rolebindings/team/bob-reads",
            None,
        );
        let list = attributes(&bob, "list", "", "pods", "", "team", "");
        assert_eq!(index.authorize(&list), Decision::Deny(String::new()));
        index.apply(
            Kind::RoleBinding,
            "/registry/rolebindings/team/bob-gone",
            Some(
                &json!({"metadata": {"name": "bob-gone", "namespace": "team"},
                "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "gone"},
                "subjects": [{"kind": "User", "name": "bob"}]}),
            ),
        );
        assert_eq!(
            index.authorize(&list),
            Decision::Deny(
                r#"RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found"#.into()
            )
        );
        index.apply(Kind::ClusterRole, "/registry/clusterroles/reader", None);
        let operator = user("olga", &["ops"]);
        let cluster_list = attributes(&operator, "list", "", "pods", "", "", "");
        assert!(
            matches!(index.authorize(&cluster_list), Decision::Deny(reason) if reason.contains("\"reader\" not found"))
        );
    }
}

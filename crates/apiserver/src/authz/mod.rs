//! Authorization: every authenticated request is checked here before a
//! handler sees it, as kube-apiserver's authorizer chain does it —
//! `system:masters` may do anything, then the Node authorizer for agents'
//! `system:node:NAME` users (`node`), then RBAC (`rbac`). The request's
//! attributes (`Attributes`) are kube-apiserver's `RequestInfo`: the verb
//! (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
//! `deletecollection`, or the lower-cased method of a non-resource URL),
//! the group, resource, subresource, namespace and name.
//!
//! Checks read in-memory indexes only (`rbac::Index`, `node::PodIndex`),
//! kept current from the watch cache; a check takes no store round trip.

pub mod aggregate;
pub mod bootstrap;
pub mod node;
pub mod rbac;
pub mod reviews;

use std::sync::Arc;

use crate::server::User;
use crate::status::ApiError;

/// The group whose members may do anything (kube-apiserver's privileged group).
pub const PRIVILEGED_GROUP: &str = "system:masters";

/// What a request asks to do, as authorization sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes<'a> {
    pub user: &'a User,
    pub verb: &'a str,
    /// Whether this is a request on a resource (else `path` names a
    /// non-resource URL).
    pub resource_request: bool,
    pub path: &'a str,
    pub api_group: &'a str,
    pub api_version: &'a str,
    pub namespace: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub name: &'a str,
}

/// The facts of a request before a user is attached: what `request_info`
/// reads from the method, path and query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub verb: String,
    pub resource_request: bool,
    pub path: String,
    pub api_group: String,
    pub api_version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
}

impl RequestInfo {
    pub fn attributes<'a>(&'a self, user: &'a User) -> Attributes<'a> {
        Attributes {
            user,
            verb: &self.verb,
            resource_request: self.resource_request,
            path: &self.path,
            api_group: &self.api_group,
            api_version: &self.api_version,
            namespace: &self.namespace,
            resource: &self.resource,
            subresource: &self.subresource,
            name: &self.name,
        }
    }
}

/// Reads a request's attributes as kube-apiserver's `RequestInfoFactory`
/// does: `/api/v1/...` and `/apis/GROUP/VERSION/...` with a resource are
/// resource requests, everything else (`/api`, `/apis/GROUP`, `/version`,
/// `/openapi/v3`, `/healthz`, `/metrics`) a non-resource URL whose verb is
/// the lower-cased method.
pub fn request_info(method: &http::Method, path: &str, query: &crate::query::Query) -> RequestInfo {
    let mut info = RequestInfo {
        path: path.to_string(),
        verb: method.as_str().to_ascii_lowercase(),
        ..Default::default()
    };
    let segments: Vec<&str> = path
        .trim_start_matches('/')
        .trim_end_matches('/')
        .split('/')
        .filter(|segment| !segment.is_empty())
        .collect();
    let (group, version, mut rest) = match segments.as_slice() {
        ["api", version, rest @ ..] if !rest.is_empty() => ("", *version, rest),
        ["apis", group, version, rest @ ..] if !rest.is_empty() => (*group, *version, rest),
        _ => return info,
    };
    info.resource_request = true;
    info.api_group = group.to_string();
    info.api_version = version.to_string();
    info.verb = match *method {
        http::Method::POST => "create",
        http::Method::GET | http::Method::HEAD => "get",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "",
    }
    .to_string();
    // The deprecated `/watch/` and `/proxy/` path prefixes name the verb.
    if let Some(("watch" | "proxy", tail)) = rest.split_first().map(|(first, tail)| (*first, tail))
    {
        info.verb = rest[0].to_string();
        rest = tail;
    }
    if let ["namespaces", namespace, tail @ ..] = rest {
        info.namespace = namespace.to_string();
        if !tail.is_empty() && !matches!(tail[0], "status" | "finalize") {
            rest = tail;
        }
    }
    info.resource = rest.first().unwrap_or(&"").to_string();
    info.name = rest.get(1).unwrap_or(&"").to_string();
    info.subresource = rest.get(2).unwrap_or(&"").to_string();
    if info.name.is_empty() && info.verb == "get" {
        info.verb = "list".into();
    }
    if info.verb == "list" {
        if query.watch {
            info.verb = "watch".into();
        }
        // A list or watch of one name (`metadata.name=NAME`) is of that name,
        // so that `resourceNames` rules allow it.
        if let Some(name) = query.field_selector.as_deref().and_then(exact_name) {
            info.name = name.to_string();
        }
    }
    if info.name.is_empty() && info.verb == "delete" {
        info.verb = "deletecollection".into();
    }
    info
}

/// The name a field selector requires exactly, if it does.
fn exact_name(selector: &str) -> Option<&str> {
    selector.split(',').find_map(|term| {
        let term = term.trim();
        let value = term
            .strip_prefix("metadata.name==")
            .or_else(|| term.strip_prefix("metadata.name="))?;
        (!value.is_empty() && !value.contains('/') && value != "." && value != "..")
            .then_some(value)
    })
}

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Not allowed; the reason (may be empty) is appended to the forbidden
    /// message, as kube-apiserver appends its authorizers' reasons.
    Deny(String),
    /// Refused with a message of its own (what kube-apiserver's
    /// NodeRestriction admission says when a node reaches past itself).
    Refused(String),
}

/// Authorization's state: the RBAC index and what the Node authorizer knows
/// of pods.
#[derive(Default)]
pub struct Authorizer {
    pub rbac: rbac::Index,
    pub pods: node::PodIndex,
}

impl Authorizer {
    pub fn new() -> Arc<Authorizer> {
        Arc::new(Authorizer::default())
    }

    /// Decides one request.
    pub fn authorize(&self, attributes: &Attributes<'_>) -> Decision {
        if attributes
            .user
            .groups
            .iter()
            .any(|group| group == PRIVILEGED_GROUP)
        {
            return Decision::Allow;
        }
        let mut reasons: Vec<String> = Vec::new();
        if let Some(node) = node::node_name(attributes.user) {
            match node::authorize(&self.pods, node, attributes) {
                Decision::Allow => return Decision::Allow,
                Decision::Refused(message) => {
                    // RBAC may still allow what the node rule refuses only if
                    // an admin bound the node a role; kube-apiserver's
                    // admission would refuse it all the same.
                    return Decision::Refused(message);
                }
                Decision::Deny(reason) => {
                    if !reason.is_empty() {
                        reasons.push(reason)
                    }
                }
            }
        }
        match self.rbac.authorize(attributes) {
            Decision::Allow => Decision::Allow,
            Decision::Deny(reason) => {
                if !reason.is_empty() {
                    reasons.push(reason);
                }
                Decision::Deny(reasons.join("\n"))
            }
            refused => refused,
        }
    }
}

/// The 403 kube-apiserver answers a request it does not authorize with:
/// `pods is forbidden: User "bob" cannot list resource "pods" in API group ""
/// in the namespace "default"`.
pub fn forbidden(attributes: &Attributes<'_>, decision: &Decision) -> ApiError {
    let reason = match decision {
        Decision::Refused(message) => {
            return ApiError::forbidden(message.clone(), attributes_details(attributes));
        }
        Decision::Deny(reason) => reason.as_str(),
        Decision::Allow => "",
    };
    let mut text = forbidden_message(attributes);
    if !reason.is_empty() {
        text = format!("{text}: {reason}");
    }
    let qualified = if attributes.api_group.is_empty() {
        attributes.resource.to_string()
    } else {
        format!("{}.{}", attributes.resource, attributes.api_group)
    };
    let message = if qualified.is_empty() {
        format!("forbidden: {text}")
    } else if attributes.name.is_empty() {
        format!("{qualified} is forbidden: {text}")
    } else {
        format!("{qualified} {:?} is forbidden: {text}", attributes.name)
    };
    ApiError::forbidden(message, attributes_details(attributes))
}

/// `Status.details` of a 403: the name, group and resource asked for.
fn attributes_details(attributes: &Attributes<'_>) -> serde_json::Value {
    let mut details = serde_json::Map::new();
    if !attributes.name.is_empty() {
        details.insert("name".into(), attributes.name.into());
    }
    if !attributes.api_group.is_empty() {
        details.insert("group".into(), attributes.api_group.into());
    }
    if !attributes.resource.is_empty() {
        details.insert("kind".into(), attributes.resource.into());
    }
    serde_json::Value::Object(details)
}

/// kube-apiserver's `forbiddenMessage`: who could not do what, where.
pub fn forbidden_message(attributes: &Attributes<'_>) -> String {
    let user = &attributes.user.name;
    if !attributes.resource_request {
        return format!(
            "User {user:?} cannot {} path {:?}",
            attributes.verb, attributes.path
        );
    }
    let resource = if attributes.subresource.is_empty() {
        attributes.resource.to_string()
    } else {
        format!("{}/{}", attributes.resource, attributes.subresource)
    };
    if attributes.namespace.is_empty() {
        format!(
            "User {user:?} cannot {} resource {resource:?} in API group {:?} at the cluster scope",
            attributes.verb, attributes.api_group
        )
    } else {
        format!(
            "User {user:?} cannot {} resource {resource:?} in API group {:?} in the namespace {:?}",
            attributes.verb, attributes.api_group, attributes.namespace
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(method: http::Method, uri: &str) -> RequestInfo {
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        request_info(&method, path, &crate::query::Query::parse(query).unwrap())
    }

    #[test]
    fn reads_attributes_as_kube_apiserver() {
        let list = info(http::Method::GET, "/api/v1/namespaces/default/pods");
        assert_eq!(
            (
                list.verb.as_str(),
                list.namespace.as_str(),
                list.resource.as_str()
            ),
            ("list", "default", "pods")
        );
        let watch = info(http::Method::GET, "/api/v1/pods?watch=true");
        assert_eq!(
            (watch.verb.as_str(), watch.namespace.as_str()),
            ("watch", "")
        );
        let log = info(http::Method::GET, "/api/v1/namespaces/ns/pods/p/log");
        assert_eq!(
            (
                log.verb.as_str(),
                log.name.as_str(),
                log.subresource.as_str()
            ),
            ("get", "p", "log")
        );
        let namespace = info(http::Method::GET, "/api/v1/namespaces/ns");
        assert_eq!(
            (
                namespace.resource.as_str(),
                namespace.name.as_str(),
                namespace.namespace.as_str()
            ),
            ("namespaces", "ns", "ns")
        );
        let finalize = info(http::Method::PUT, "/api/v1/namespaces/ns/finalize");
        assert_eq!(
            (
                finalize.resource.as_str(),
                finalize.subresource.as_str(),
                finalize.verb.as_str()
            ),
            ("namespaces", "finalize", "update")
        );
        let collection = info(
            http::Method::DELETE,
            "/apis/apps/v1/namespaces/a/deployments",
        );
        assert_eq!(
            (collection.verb.as_str(), collection.api_group.as_str()),
            ("deletecollection", "apps")
        );
        let named = info(
            http::Method::GET,
            "/api/v1/namespaces/a/configmaps?fieldSelector=metadata.name%3Dcm&watch=1",
        );
        assert_eq!((named.verb.as_str(), named.name.as_str()), ("watch", "cm"));
        for path in [
            "/api",
            "/api/v1",
            "/apis/apps",
            "/apis/apps/v1",
            "/version",
            "/openapi/v3",
        ] {
            let discovery = info(http::Method::GET, path);
            assert!(!discovery.resource_request, "{path}");
            assert_eq!(discovery.verb, "get");
        }
        assert_eq!(info(http::Method::POST, "/metrics").verb, "post");
    }

    #[test]
    fn forbidden_messages_as_kube_apiserver_prints_them() {
        let bob = User {
            name: "bob".into(),
            groups: vec!["system:authenticated".into()],
        };
        let list = info(http::Method::GET, "/api/v1/namespaces/default/pods");
        let error = forbidden(&list.attributes(&bob), &Decision::Deny(String::new()));
        assert_eq!(error.code, 403);
        assert_eq!(
            error.message,
            r#"pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "default""#
        );
        let nodes = info(http::Method::GET, "/api/v1/nodes");
        assert_eq!(
            forbidden(&nodes.attributes(&bob), &Decision::Deny(String::new())).message,
            r#"nodes is forbidden: User "bob" cannot list resource "nodes" in API group "" at the cluster scope"#
        );
        let log = info(http::Method::GET, "/api/v1/namespaces/ns/pods/web/log");
        assert_eq!(
            forbidden(&log.attributes(&bob), &Decision::Deny(String::new())).message,
            r#"pods "web" is forbidden: User "bob" cannot get resource "pods/log" in API group "" in the namespace "ns""#
        );
        let deployments = info(
            http::Method::POST,
            "/apis/apps/v1/namespaces/ns/deployments",
        );
        assert_eq!(
            forbidden(
                &deployments.attributes(&bob),
                &Decision::Deny(
                    r#"RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found"#.into()
                )
            )
            .message,
            r#"deployments.apps is forbidden: User "bob" cannot create resource "deployments" in API group "apps" in the namespace "ns": RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found"#
        );
        let path = info(http::Method::GET, "/metrics");
        assert_eq!(
            forbidden(&path.attributes(&bob), &Decision::Deny(String::new())).message,
            r#"forbidden: User "bob" cannot get path "/metrics""#
        );
    }
}

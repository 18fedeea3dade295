//! The review APIs: `SelfSubjectAccessReview` (`kubectl auth can-i`),
//! `SubjectAccessReview` and `LocalSubjectAccessReview` (the same question
//! about someone else, for whoever may create them), `SelfSubjectRulesReview`
//! (`kubectl auth can-i --list`) and `SelfSubjectReview` (`kubectl auth
//! whoami`). Each is created, answered and forgotten: nothing is stored.

use serde_json::{Value, json};

use super::{Attributes, Authorizer, Decision};
use crate::server::User;
use crate::status::ApiError;

/// The review kinds, by their URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Review {
    SelfSubjectAccess,
    SubjectAccess,
    /// In the namespace the URL names.
    LocalSubjectAccess,
    SelfSubjectRules,
    SelfSubject,
}

impl Review {
    /// The review a request's group, version and resource name, if any.
    pub fn of(group: &str, version: &str, resource: &str) -> Option<Review> {
        match (group, version, resource) {
            ("authorization.k8s.io", "v1", "selfsubjectaccessreviews") => {
                Some(Review::SelfSubjectAccess)
            }
            ("authorization.k8s.io", "v1", "subjectaccessreviews") => Some(Review::SubjectAccess),
            ("authorization.k8s.io", "v1", "localsubjectaccessreviews") => {
                Some(Review::LocalSubjectAccess)
            }
            ("authorization.k8s.io", "v1", "selfsubjectrulesreviews") => {
                Some(Review::SelfSubjectRules)
            }
            ("authentication.k8s.io", "v1", "selfsubjectreviews") => Some(Review::SelfSubject),
            _ => None,
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Review::SelfSubjectAccess => "SelfSubjectAccessReview",
            Review::SubjectAccess => "SubjectAccessReview",
            Review::LocalSubjectAccess => "LocalSubjectAccessReview",
            Review::SelfSubjectRules => "SelfSubjectRulesReview",
            Review::SelfSubject => "SelfSubjectReview",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Review::SelfSubject => "authentication.k8s.io/v1",
            _ => "authorization.k8s.io/v1",
        }
    }
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Answers a review created by `user` (its body decoded: JSON, YAML or
/// protobuf); `namespace` is the URL's (for LocalSubjectAccessReview).
pub fn answer(
    authorizer: &Authorizer,
    review: Review,
    user: &User,
    namespace: Option<&str>,
    request: &Value,
) -> Result<Value, ApiError> {
    let kind = text(request, "/kind");
    if !kind.is_empty() && kind != review.kind() {
        return Err(ApiError::bad_request(format!(
            "{kind} is not a {}",
            review.kind()
        )));
    }
    let spec = request.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = match review {
        Review::SelfSubject => json!({"userInfo": {"username": user.name, "groups": user.groups}}),
        Review::SelfSubjectRules => rules(authorizer, user, text(&spec, "/namespace")),
        Review::SelfSubjectAccess => access(authorizer, user, &spec, None)?,
        Review::SubjectAccess | Review::LocalSubjectAccess => {
            let subject = User {
                name: text(&spec, "/user").to_string(),
                groups: spec
                    .get("groups")
                    .and_then(Value::as_array)
                    .map(|groups| {
                        groups
                            .iter()
                            .filter_map(|group| group.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            if subject.name.is_empty() && subject.groups.is_empty() {
                return Err(invalid(
                    review,
                    "spec.user",
                    "at least one of user or group must be specified",
                ));
            }
            access(
                authorizer,
                &subject,
                &spec,
                namespace.filter(|_| review == Review::LocalSubjectAccess),
            )?
        }
    };
    let mut answer = json!({
        "kind": review.kind(),
        "apiVersion": review.api_version(),
        "metadata": {"creationTimestamp": null},
        "status": status,
    });
    if review != Review::SelfSubject {
        answer["spec"] = spec;
    }
    if let Some(namespace) = namespace {
        answer["metadata"]["namespace"] = namespace.into();
    }
    Ok(answer)
}

fn invalid(review: Review, field: &str, detail: &str) -> ApiError {
    let mut error = ApiError::bad_request(format!(
        "{}.authorization.k8s.io \"\" is invalid: {field}: Invalid value: \"\": {detail}",
        review.kind()
    ));
    error.code = 422;
    error.reason = "Invalid";
    error
}

/// An access review's status: whether `user` may do what the spec's
/// resource or non-resource attributes say.
fn access(
    authorizer: &Authorizer,
    user: &User,
    spec: &Value,
    forced_namespace: Option<&str>,
) -> Result<Value, ApiError> {
    let decision = if let Some(resource) = spec.get("resourceAttributes") {
        let namespace = forced_namespace.unwrap_or_else(|| text(resource, "/namespace"));
        if let Some(forced) = forced_namespace
            && !text(resource, "/namespace").is_empty()
            && text(resource, "/namespace") != forced
        {
            return Err(ApiError::bad_request(format!(
                "spec.resourceAttributes.namespace must match the namespace {forced:?}"
            )));
        }
        authorizer.authorize(&Attributes {
            user,
            verb: text(resource, "/verb"),
            resource_request: true,
            path: "",
            api_group: text(resource, "/group"),
            api_version: text(resource, "/version"),
            namespace,
            resource: text(resource, "/resource"),
            subresource: text(resource, "/subresource"),
            name: text(resource, "/name"),
        })
    } else if let Some(non_resource) = spec.get("nonResourceAttributes") {
        authorizer.authorize(&Attributes {
            user,
            verb: text(non_resource, "/verb"),
            resource_request: false,
            path: text(non_resource, "/path"),
            api_group: "",
            api_version: "",
            namespace: "",
            resource: "",
            subresource: "",
            name: "",
        })
    } else {
        return Err(ApiError::bad_request(
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    };
    Ok(match decision {
        Decision::Allow => json!({"allowed": true}),
        Decision::Deny(reason) | Decision::Refused(reason) if !reason.is_empty() => {
            json!({"allowed": false, "reason": reason})
        }
        _ => json!({"allowed": false}),
    })
}

/// A rules review's status: every RBAC rule that applies to `user` in
/// `namespace`. The Node authorizer's rules are code, not rules: a node's
/// answer says it is incomplete.
fn rules(authorizer: &Authorizer, user: &User, namespace: &str) -> Value {
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    let mut missing = Vec::new();
    let privileged = user
        .groups
        .iter()
        .any(|group| group == super::PRIVILEGED_GROUP);
    if privileged {
        resource_rules.push(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        non_resource_rules.push(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
    }
    authorizer.rbac.visit_rules(user, namespace, &mut missing, |rule| {
        if rule.non_resource_urls.is_empty() {
            let mut entry = json!({"verbs": rule.verbs, "apiGroups": rule.api_groups, "resources": rule.resources});
            if !rule.resource_names.is_empty() {
                entry["resourceNames"] = rule.resource_names.clone().into();
            }
            if !resource_rules.contains(&entry) {
                resource_rules.push(entry);
            }
        } else {
            let entry = json!({"verbs": rule.verbs, "nonResourceURLs": rule.non_resource_urls});
            if !non_resource_rules.contains(&entry) {
                non_resource_rules.push(entry);
            }
        }
        false
    });
    let mut status = json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": super::node::node_name(user).is_some(),
    });
    if !missing.is_empty() {
        status["evaluationError"] = missing.join(", ").into();
    }
    status
}

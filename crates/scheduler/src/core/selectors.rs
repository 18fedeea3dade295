//! Matching rules shared by the filters: label selectors, node selector
//! terms (node affinity) and tolerations against taints.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub type Labels = BTreeMap<String, String>;

/// A label selector against labels. An empty selector matches everything;
/// an operator the API would not accept matches nothing.
pub fn selector_matches(selector: &LabelSelector, labels: &Labels) -> bool {
    for (key, value) in selector.match_labels.iter().flatten() {
        if labels.get(key) != Some(value) {
            return false;
        }
    }
    for requirement in selector.match_expressions.iter().flatten() {
        let present = labels.get(&requirement.key);
        let values = requirement.values.as_deref().unwrap_or_default();
        let fits = match requirement.operator.as_str() {
            "In" => present.is_some_and(|value| values.contains(value)),
            "NotIn" => present.is_none_or(|value| !values.contains(value)),
            "Exists" => present.is_some(),
            "DoesNotExist" => present.is_none(),
            _ => false,
        };
        if !fits {
            return false;
        }
    }
    true
}

/// Node selector terms are ORed; a term's requirements are ANDed; a term
/// with no requirements matches no node (as upstream).
pub fn node_selector_terms_match(
    terms: &[NodeSelectorTerm],
    node_name: &str,
    labels: &Labels,
) -> bool {
    terms
        .iter()
        .any(|term| node_selector_term_matches(term, node_name, labels))
}

pub fn node_selector_term_matches(
    term: &NodeSelectorTerm,
    node_name: &str,
    labels: &Labels,
) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    expressions
        .iter()
        .all(|requirement| node_requirement_matches(requirement, labels.get(&requirement.key)))
        && fields.iter().all(|requirement| {
            // The only field a node selector may name is the node's name.
            requirement.key == "metadata.name"
                && node_requirement_matches(requirement, Some(&node_name.to_string()))
        })
}

fn node_requirement_matches(
    requirement: &NodeSelectorRequirement,
    present: Option<&String>,
) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    match requirement.operator.as_str() {
        "In" => present.is_some_and(|value| values.contains(value)),
        "NotIn" => present.is_none_or(|value| !values.contains(value)),
        "Exists" => present.is_some(),
        "DoesNotExist" => present.is_none(),
        operator @ ("Gt" | "Lt") => {
            let (Some(present), [bound]) = (present, values) else {
                return false;
            };
            let (Ok(present), Ok(bound)) = (present.parse::<i64>(), bound.parse::<i64>()) else {
                return false;
            };
            if operator == "Gt" {
                present > bound
            } else {
                present < bound
            }
        }
        _ => false,
    }
}

/// Whether `toleration` tolerates `taint` (core/v1 `Toleration.ToleratesTaint`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref()
        && !effect.is_empty()
        && effect != taint.effect
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            // An empty key with Equal is invalid; it tolerates nothing.
            !key.is_empty()
                && toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// Whether any of `tolerations` tolerates `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations
        .iter()
        .any(|toleration| tolerates(toleration, taint))
}

//! The disruption controller's arithmetic, sans IO: from a
//! PodDisruptionBudget, the pods it selects and their controllers' scale,
//! how many pods are expected, how many must stay healthy, how many are,
//! and so how many may be disrupted now.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use crate::ownership::controller_of;
use crate::pods;

pub const DISRUPTION_ALLOWED: &str = "DisruptionAllowed";
pub const SUFFICIENT_PODS: &str = "SufficientPods";
pub const INSUFFICIENT_PODS: &str = "InsufficientPods";
pub const SYNC_FAILED: &str = "SyncFailed";

/// Why the expected count cannot be known.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum BudgetError {
    #[error("found no controller ref for pod {0:?}")]
    NoControllerRef(String),
    #[error("found no controllers for pod {0:?}")]
    NoControllers(String),
    #[error("invalid value for IntOrString: invalid value {0:?}")]
    BadValue(String),
}

impl BudgetError {
    /// The event reason upstream records for it.
    pub fn reason(&self) -> &'static str {
        match self {
            BudgetError::NoControllerRef(_) => "NoControllerRef",
            BudgetError::NoControllers(_) => "NoControllers",
            BudgetError::BadValue(_) => "CalculateExpectedPodCountFailed",
        }
    }
}

/// `value` of `total`: an integer as is, a percentage rounded up.
pub fn scaled(value: &IntOrString, total: i32) -> Result<i32, BudgetError> {
    match value {
        IntOrString::Int(number) => Ok(*number),
        IntOrString::String(text) => {
            let percent: i64 = text
                .strip_suffix('%')
                .and_then(|number| number.parse().ok())
                .ok_or_else(|| BudgetError::BadValue(text.clone()))?;
            Ok(((percent * total as i64 + 99) / 100) as i32)
        }
    }
}

/// The counts a budget's status carries.
#[derive(Debug, PartialEq)]
pub struct Counts {
    pub expected: i32,
    pub desired_healthy: i32,
    pub current_healthy: i32,
    pub allowed: i32,
}

/// The counts for `budget` over the pods it selects; `scale_of` gives the
/// replicas of a pod's controller (keyed by its uid), `None` when the
/// controller is not one that has a scale.
pub fn counts(
    budget: &PodDisruptionBudget,
    selected: &[&Pod],
    scale_of: impl Fn(&Pod) -> Option<(String, i32)>,
) -> Result<Counts, BudgetError> {
    let spec = budget.spec.clone().unwrap_or_default();
    let expected_scale = || -> Result<i32, BudgetError> {
        let mut scales: BTreeMap<String, i32> = BTreeMap::new();
        for pod in selected {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let Some(reference) = controller_of(&pod.metadata) else {
                return Err(BudgetError::NoControllerRef(name));
            };
            if scales.contains_key(&reference.uid) {
                continue;
            }
            let (uid, scale) = scale_of(pod).ok_or(BudgetError::NoControllers(name))?;
            scales.insert(uid, scale);
        }
        Ok(scales.values().sum())
    };
    let (expected, desired_healthy) = if let Some(max_unavailable) = &spec.max_unavailable {
        let expected = expected_scale()?;
        let unavailable = scaled(max_unavailable, expected)?;
        (expected, (expected - unavailable).max(0))
    } else if let Some(min_available) = &spec.min_available {
        match min_available {
            IntOrString::Int(number) => (selected.len() as i32, *number),
            percent => {
                let expected = expected_scale()?;
                (expected, scaled(percent, expected)?)
            }
        }
    } else {
        (selected.len() as i32, 0)
    };
    let current_healthy = selected
        .iter()
        .filter(|pod| !pods::is_terminating(pod) && pods::is_ready(pod))
        .count() as i32;
    Ok(Counts {
        expected,
        desired_healthy,
        current_healthy,
        allowed: (current_healthy - desired_healthy).max(0),
    })
}

/// The budget's status from `counts` (or, when they cannot be computed,
/// upstream's fail-safe: no disruptions allowed, and why).
pub fn status(
    budget: &PodDisruptionBudget,
    counts: Result<&Counts, &BudgetError>,
    now: Timestamp,
) -> PodDisruptionBudgetStatus {
    let previous = budget.status.clone().unwrap_or_default();
    let (condition_status, reason, message) = match counts {
        Ok(counts) if counts.allowed > 0 => ("True", SUFFICIENT_PODS, String::new()),
        Ok(_) => ("False", INSUFFICIENT_PODS, String::new()),
        Err(error) => ("False", SYNC_FAILED, error.to_string()),
    };
    let mut conditions: Vec<Condition> = previous.conditions.clone().unwrap_or_default();
    let generation = budget.metadata.generation;
    match conditions
        .iter_mut()
        .find(|condition| condition.type_ == DISRUPTION_ALLOWED)
    {
        Some(condition) => {
            if condition.status != condition_status {
                condition.last_transition_time = Time(now);
            }
            condition.status = condition_status.to_string();
            condition.reason = reason.to_string();
            condition.message = message;
            condition.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: DISRUPTION_ALLOWED.to_string(),
            status: condition_status.to_string(),
            reason: reason.to_string(),
            message,
            last_transition_time: Time(now),
            observed_generation: generation,
        }),
    }
    let (expected, desired, current, allowed) = match counts {
        Ok(counts) => (
            counts.expected,
            counts.desired_healthy,
            counts.current_healthy,
            counts.allowed,
        ),
        Err(_) => (
            previous.expected_pods,
            previous.desired_healthy,
            previous.current_healthy,
            0,
        ),
    };
    PodDisruptionBudgetStatus {
        conditions: Some(conditions),
        current_healthy: current,
        desired_healthy: desired,
        disrupted_pods: previous.disrupted_pods,
        disruptions_allowed: allowed,
        expected_pods: expected,
        observed_generation: generation,
    }
}

/// Whether two statuses differ in what the controller writes.
pub fn status_changed(
    old: Option<&PodDisruptionBudgetStatus>,
    new: &PodDisruptionBudgetStatus,
) -> bool {
    let Some(old) = old else { return true };
    let conditions = |status: &PodDisruptionBudgetStatus| -> Vec<(String, String, String)> {
        status
            .conditions
            .iter()
            .flatten()
            .map(|condition| {
                (
                    condition.type_.clone(),
                    condition.status.clone(),
                    condition.reason.clone(),
                )
            })
            .collect()
    };
    old.current_healthy != new.current_healthy
        || old.desired_healthy != new.desired_healthy
        || old.expected_pods != new.expected_pods
        || old.disruptions_allowed != new.disruptions_allowed
        || old.observed_generation != new.observed_generation
        || conditions(old) != conditions(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::testing::*;
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn budget(
        min_available: Option<IntOrString>,
        max_unavailable: Option<IntOrString>,
    ) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some("web".into()),
                generation: Some(2),
                ..ObjectMeta::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                min_available,
                max_unavailable,
                ..PodDisruptionBudgetSpec::default()
            }),
            status: None,
        }
    }

    fn web_pods() -> Vec<Pod> {
        vec![
            ready(pod("a", &[], Some("rs"), 0), 0),
            ready(pod("b", &[], Some("rs"), 0), 0),
            running(pod("c", &[], Some("rs"), 0)),
            terminating(ready(pod("d", &[], Some("rs"), 0), 0)),
        ]
    }

    fn scale_four(pod: &Pod) -> Option<(String, i32)> {
        controller_of(&pod.metadata).map(|reference| (reference.uid.clone(), 4))
    }

    #[test]
    fn min_available_as_a_number_counts_the_selected_pods() {
        let pods = web_pods();
        let selected: Vec<&Pod> = pods.iter().collect();
        let counts = counts(&budget(Some(IntOrString::Int(1)), None), &selected, |_| {
            None
        })
        .unwrap();
        assert_eq!(
            counts,
            Counts {
                expected: 4,
                desired_healthy: 1,
                current_healthy: 2,
                allowed: 1
            }
        );
    }

    #[test]
    fn percentages_and_max_unavailable_use_the_controllers_scale() {
        let pods = web_pods();
        let selected: Vec<&Pod> = pods.iter().collect();
        let half = counts(
            &budget(Some(IntOrString::String("50%".into())), None),
            &selected,
            scale_four,
        )
        .unwrap();
        assert_eq!(
            (half.expected, half.desired_healthy, half.allowed),
            (4, 2, 0)
        );
        let one_down = counts(
            &budget(None, Some(IntOrString::Int(1))),
            &selected,
            scale_four,
        )
        .unwrap();
        assert_eq!((one_down.desired_healthy, one_down.allowed), (3, 0));
        let orphan = [pod("stray", &[], None, 0)];
        let refs: Vec<&Pod> = orphan.iter().collect();
        assert_eq!(
            counts(&budget(None, Some(IntOrString::Int(1))), &refs, scale_four),
            Err(BudgetError::NoControllerRef("stray".into()))
        );
    }

    #[test]
    fn status_says_whether_disruptions_are_allowed() {
        let budget = budget(Some(IntOrString::Int(1)), None);
        let allowed = Counts {
            expected: 3,
            desired_healthy: 1,
            current_healthy: 3,
            allowed: 2,
        };
        let status = status(&budget, Ok(&allowed), at(0));
        assert_eq!(status.disruptions_allowed, 2);
        assert_eq!(status.observed_generation, Some(2));
        let condition = &status.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("True", SUFFICIENT_PODS)
        );
        let failed = super::status(&budget, Err(&BudgetError::NoControllers("x".into())), at(1));
        assert_eq!(failed.disruptions_allowed, 0);
        assert_eq!(failed.conditions.as_ref().unwrap()[0].reason, SYNC_FAILED);
        assert!(status_changed(Some(&status), &failed));
    }
}

//! Severity ratings, ordered, as distributions and `--fail-on` name them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The advisory gives no rating (Debian's "not yet assigned").
    Unknown,
    /// Debian's "unimportant", Ubuntu's "negligible".
    Negligible,
    Low,
    Medium,
    High,
    Critical,
}

#[derive(Debug, thiserror::Error)]
#[error("unknown severity {0:?}: expected unknown, negligible, low, medium, high or critical")]
pub struct UnknownSeverity(pub String);

impl FromStr for Severity {
    type Err = UnknownSeverity;

    fn from_str(text: &str) -> Result<Severity, UnknownSeverity> {
        match text.to_ascii_lowercase().as_str() {
            "unknown" => Ok(Severity::Unknown),
            "negligible" => Ok(Severity::Negligible),
            "low" => Ok(Severity::Low),
            "medium" | "moderate" => Ok(Severity::Medium),
            "high" | "important" => Ok(Severity::High),
            "critical" => Ok(Severity::Critical),
            _ => Err(UnknownSeverity(text.to_string())),
        }
    }
}

impl Severity {
    /// A distribution's rating text: Debian's urgencies (`low**` marks a
    /// guess and counts as `low`; `unimportant`, `not yet assigned`,
    /// `end-of-life`), Ubuntu's priorities, GitHub's `MODERATE`.
    pub fn from_rating(rating: &str) -> Severity {
        let rating = rating.trim().trim_end_matches('*');
        match rating.to_ascii_lowercase().as_str() {
            "unimportant" | "negligible" => Severity::Negligible,
            other => other.parse().unwrap_or(Severity::Unknown),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "unknown",
            Severity::Negligible => "negligible",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A CVSS v3 base vector from an advisory, with the base score computed
/// from it. Kept apart from the distribution's rating: a distribution
/// rates a flaw for its own build and configuration, and often lower.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cvss {
    pub vector: String,
    pub base_score: f32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("CVSS vector {vector:?}: {message}")]
pub struct CvssError {
    pub vector: String,
    pub message: String,
}

impl Cvss {
    /// Parses a `CVSS:3.0/…` or `CVSS:3.1/…` vector and computes its base
    /// score by the specification's formulas (temporal and environmental
    /// metrics, when present, are left out: the base score is what
    /// advisories publish).
    pub fn from_v3_vector(vector: &str) -> Result<Cvss, CvssError> {
        let fail = |message: String| CvssError {
            vector: vector.to_string(),
            message,
        };
        let mut parts = vector.split('/');
        let round_up: fn(f64) -> f64 = match parts.next() {
            Some("CVSS:3.1") => round_up_v31,
            Some("CVSS:3.0") => |value| (value * 10.0).ceil() / 10.0,
            _ => return Err(fail("not a CVSS 3.0 or 3.1 vector".to_string())),
        };
        let mut metrics: BTreeMap<&str, &str> = BTreeMap::new();
        for part in parts {
            let Some((metric, value)) = part.split_once(':') else {
                return Err(fail(format!("{part:?} is not METRIC:VALUE")));
            };
            if metrics.insert(metric, value).is_some() {
                return Err(fail(format!("{metric} is given twice")));
            }
        }
        let get = |metric: &str, table: &[(&str, f64)]| -> Result<f64, CvssError> {
            let value = metrics
                .get(metric)
                .ok_or_else(|| fail(format!("the base metric {metric} is missing")))?;
            table
                .iter()
                .find(|(name, _)| name == value)
                .map(|(_, weight)| *weight)
                .ok_or_else(|| fail(format!("{metric}:{value} is not a valid value")))
        };
        let scope_changed = match metrics.get("S") {
            Some(&"U") => false,
            Some(&"C") => true,
            _ => return Err(fail("the base metric S is missing or invalid".to_string())),
        };
        let attack_vector = get("AV", &[("N", 0.85), ("A", 0.62), ("L", 0.55), ("P", 0.2)])?;
        let attack_complexity = get("AC", &[("L", 0.77), ("H", 0.44)])?;
        let privileges = if scope_changed {
            get("PR", &[("N", 0.85), ("L", 0.68), ("H", 0.5)])?
        } else {
            get("PR", &[("N", 0.85), ("L", 0.62), ("H", 0.27)])?
        };
        let user_interaction = get("UI", &[("N", 0.85), ("R", 0.62)])?;
        let impact_weights = [("H", 0.56), ("L", 0.22), ("N", 0.0)];
        let confidentiality = get("C", &impact_weights)?;
        let integrity = get("I", &impact_weights)?;
        let availability = get("A", &impact_weights)?;
        let impact_subscore =
            1.0 - (1.0 - confidentiality) * (1.0 - integrity) * (1.0 - availability);
        let impact = if scope_changed {
            7.52 * (impact_subscore - 0.029) - 3.25 * (impact_subscore - 0.02).powi(15)
        } else {
            6.42 * impact_subscore
        };
        let exploitability =
            8.22 * attack_vector * attack_complexity * privileges * user_interaction;
        let base_score = if impact <= 0.0 {
            0.0
        } else if scope_changed {
            round_up((1.08 * (impact + exploitability)).min(10.0))
        } else {
            round_up((impact + exploitability).min(10.0))
        };
        Ok(Cvss {
            vector: vector.to_string(),
            base_score: base_score as f32,
        })
    }

    /// The specification's qualitative rating of the base score.
    pub fn rating(&self) -> Severity {
        match self.base_score {
            score if score >= 9.0 => Severity::Critical,
            score if score >= 7.0 => Severity::High,
            score if score >= 4.0 => Severity::Medium,
            score if score >= 0.1 => Severity::Low,
            _ => Severity::Negligible,
        }
    }
}

/// CVSS 3.1's Roundup: the smallest one-decimal number at or above the
/// input, computed on integers so that float noise (`4.000000000001`)
/// does not round up a whole tenth.
fn round_up_v31(value: f64) -> f64 {
    let scaled = (value * 100_000.0).round() as i64;
    if scaled % 10_000 == 0 {
        scaled as f64 / 100_000.0
    } else {
        ((scaled / 10_000) + 1) as f64 / 10.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cvss_v3_base_scores() {
        // Vectors and the base scores NVD publishes for them.
        for (vector, score, rating) in [
            (
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
                9.8,
                Severity::Critical,
            ),
            (
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H",
                10.0,
                Severity::Critical,
            ),
            (
                "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H",
                7.8,
                Severity::High,
            ),
            (
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N",
                6.1,
                Severity::Medium,
            ),
            (
                "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:N/A:N",
                5.9,
                Severity::Medium,
            ),
            (
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H",
                7.5,
                Severity::High,
            ),
            (
                "CVSS:3.1/AV:L/AC:H/PR:L/UI:N/S:U/C:H/I:H/A:H",
                7.0,
                Severity::High,
            ),
            (
                "CVSS:3.1/AV:P/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N",
                1.6,
                Severity::Low,
            ),
            (
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N",
                0.0,
                Severity::Negligible,
            ),
            (
                "CVSS:3.0/AV:N/AC:L/PR:L/UI:N/S:C/C:L/I:L/A:N",
                6.4,
                Severity::Medium,
            ),
            (
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:P/RL:O",
                9.8,
                Severity::Critical,
            ),
        ] {
            let cvss = Cvss::from_v3_vector(vector).unwrap();
            assert_eq!(cvss.base_score, score, "{vector}");
            assert_eq!(cvss.rating(), rating, "{vector}");
        }
        for bad in [
            "CVSS:2.0/AV:N",
            "AV:N/AC:L/Au:N/C:P/I:P/A:P",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H",
            "CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:3.1/AV:N/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        ] {
            assert!(Cvss::from_v3_vector(bad).is_err(), "{bad}");
        }
    }
}

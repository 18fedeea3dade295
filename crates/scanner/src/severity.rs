//! Severity ratings, ordered, as distributions and `--fail-on` name them.

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

//! The scan policy: an image whose scan finds a vulnerability at or above a
//! severity is refused. The node agent (`shoal up --image-scan-fail-on`)
//! and `shoal run --scan-fail-on` ask it before they start a container.
//! Verdicts are kept per image (its manifest digest) and per state of the
//! vulnerability data (its sources and their import times), so a container
//! in a restart loop is scanned once, and again only after an import.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use runtime::digest::Digest;
use runtime::image::store::Store;

use crate::index::{self, IndexError, LayerCache};
use crate::matcher::{self, Finding};
use crate::severity::Severity;
use crate::vulndb::{VulnDb, VulnDbError};

/// How many of the worst findings a refusal names.
const N_NAMED: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot scan image {image}: {error}")]
    Index { image: String, error: IndexError },
    #[error("cannot check image {image}: {error}")]
    VulnDb { image: String, error: VulnDbError },
    /// A policy with nothing to check against refuses rather than lets
    /// everything through.
    #[error(
        "cannot check image {image} against the scan policy (refuse {fail_on} and above): there is no vulnerability data; import some with `shoal vulndb import`"
    )]
    NoData { image: String, fail_on: Severity },
}

/// One vulnerability a refusal names: the worst instance of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedFinding {
    pub vulnerability: String,
    pub package: String,
    pub installed_version: String,
    pub severity: Severity,
    pub fixed_version: Option<String>,
}

/// Why an image may not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The image as the caller named it.
    pub image: String,
    pub manifest_digest: Digest,
    pub fail_on: Severity,
    /// Distinct vulnerabilities at or above `fail_on`.
    pub n_vulnerabilities: usize,
    /// The worst of them, worst first (at most three).
    pub worst: Vec<NamedFinding>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "image {} has {} {} at or above {} severity: ",
            self.image,
            self.n_vulnerabilities,
            if self.n_vulnerabilities == 1 {
                "vulnerability"
            } else {
                "vulnerabilities"
            },
            self.fail_on
        )?;
        for (finding_idx, finding) in self.worst.iter().enumerate() {
            if finding_idx > 0 {
                f.write_str(", ")?;
            }
            write!(
                f,
                "{} in {} {} ({}, {})",
                finding.vulnerability,
                finding.package,
                finding.installed_version,
                finding.severity,
                match &finding.fixed_version {
                    Some(fixed) => format!("fixed in {fixed}"),
                    None => "no fix yet".to_string(),
                }
            )?;
        }
        let n_unnamed = self.n_vulnerabilities.saturating_sub(self.worst.len());
        if n_unnamed > 0 {
            write!(f, " and {n_unnamed} more")?;
        }
        Ok(())
    }
}

/// What the policy says of one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed {
        /// Findings below the threshold.
        n_findings: usize,
        /// What the scan could not index or match (an unknown distribution,
        /// an unreadable layer): the image is allowed on what was found.
        warnings: Vec<String>,
    },
    Refused(Refusal),
}

/// Sorts the findings at or above `fail_on` worst first and names the
/// worst few, one per vulnerability; `None` when there are none.
pub fn judge_findings(
    image: &str,
    manifest_digest: &Digest,
    findings: &[Finding],
    fail_on: Severity,
) -> Option<Refusal> {
    let mut serious: Vec<&Finding> = findings.iter().filter(|f| f.severity >= fail_on).collect();
    if serious.is_empty() {
        return None;
    }
    // Worst first; among equals, those with a fix first (the user can act
    // on them), then by id for a stable message.
    serious.sort_by(|a, b| {
        (b.severity, a.state, &a.vulnerability, &a.package).cmp(&(
            a.severity,
            b.state,
            &b.vulnerability,
            &b.package,
        ))
    });
    let mut seen = BTreeSet::new();
    let mut worst = Vec::new();
    for finding in &serious {
        if !seen.insert(finding.vulnerability.as_str()) {
            continue;
        }
        if worst.len() < N_NAMED {
            worst.push(NamedFinding {
                vulnerability: finding.vulnerability.clone(),
                package: finding.package.clone(),
                installed_version: finding.installed_version.clone(),
                severity: finding.severity,
                fixed_version: finding.fixed_version.clone(),
            });
        }
    }
    Some(Refusal {
        image: image.to_string(),
        manifest_digest: manifest_digest.clone(),
        fail_on,
        n_vulnerabilities: seen.len(),
        worst,
    })
}

/// The sources' names and import times, as a key: a verdict stands until
/// this changes.
type DataGeneration = Vec<(String, u64, String)>;

/// A scan policy over one machine's data directory (its content store,
/// layer cache and vulnerability database). Checks are serialised: the
/// database file is opened for each and closed after, so `shoal vulndb
/// import` can run beside a long-lived agent.
pub struct ScanPolicy {
    data_dir: PathBuf,
    fail_on: Severity,
    verdicts: Mutex<HashMap<Digest, (DataGeneration, Verdict)>>,
    n_scans: AtomicUsize,
}

impl ScanPolicy {
    pub fn new(data_dir: &Path, fail_on: Severity) -> ScanPolicy {
        ScanPolicy {
            data_dir: data_dir.to_path_buf(),
            fail_on,
            verdicts: Mutex::new(HashMap::new()),
            n_scans: AtomicUsize::new(0),
        }
    }

    pub fn fail_on(&self) -> Severity {
        self.fail_on
    }

    /// How many scans the policy has run (checks answered from the kept
    /// verdicts do not count).
    pub fn n_scans(&self) -> usize {
        self.n_scans.load(Ordering::Relaxed)
    }

    /// Checks the image `reference` names in `store` (a name or digest as
    /// `run` takes it); `shown_as` is how messages name it.
    pub fn check(
        &self,
        store: &Store,
        reference: &str,
        shown_as: &str,
    ) -> Result<Verdict, PolicyError> {
        // A poisoned lock only means another check panicked; the map is
        // still whole (entries are inserted in one step).
        let mut verdicts = self
            .verdicts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let index_error = |error| PolicyError::Index {
            image: shown_as.to_string(),
            error,
        };
        let db_error = |error| PolicyError::VulnDb {
            image: shown_as.to_string(),
            error,
        };
        let manifest_digest = store
            .resolve(reference)
            .map_err(|error| index_error(IndexError::Store(error)))?;
        let db = VulnDb::open(&self.data_dir).map_err(db_error)?;
        let generation: DataGeneration = db
            .status()
            .map_err(db_error)?
            .into_iter()
            .map(|status| {
                (
                    status.source,
                    status.imported_at_unix_seconds,
                    status.last_file,
                )
            })
            .collect();
        if generation.is_empty() {
            return Err(PolicyError::NoData {
                image: shown_as.to_string(),
                fail_on: self.fail_on,
            });
        }
        if let Some((kept_generation, verdict)) = verdicts.get(&manifest_digest)
            && *kept_generation == generation
        {
            let mut verdict = verdict.clone();
            if let Verdict::Refused(refusal) = &mut verdict {
                refusal.image = shown_as.to_string();
            }
            return Ok(verdict);
        }
        self.n_scans.fetch_add(1, Ordering::Relaxed);
        let cache = LayerCache::open(&self.data_dir);
        let index = index::index_stored_image(store, &manifest_digest.to_string(), &cache)
            .map_err(index_error)?;
        let matched = matcher::match_image(&index, &db).map_err(db_error)?;
        let verdict =
            match judge_findings(shown_as, &manifest_digest, &matched.findings, self.fail_on) {
                Some(refusal) => Verdict::Refused(refusal),
                None => Verdict::Allowed {
                    n_findings: matched.findings.len(),
                    warnings: index.warnings.into_iter().chain(matched.warnings).collect(),
                },
            };
        verdicts.insert(manifest_digest, (generation, verdict.clone()));
        Ok(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::FindingState;

    fn finding(
        package: &str,
        vulnerability: &str,
        severity: Severity,
        fixed: Option<&str>,
    ) -> Finding {
        Finding {
            package_kind: crate::packages::PackageKind::Deb,
            package: package.to_string(),
            architecture: "amd64".to_string(),
            installed_version: "1.0-1".to_string(),
            source_name: package.to_string(),
            source_version: "1.0-1".to_string(),
            vulnerability: vulnerability.to_string(),
            state: if fixed.is_some() {
                FindingState::Fixed
            } else {
                FindingState::Unfixed
            },
            fixed_version: fixed.map(str::to_string),
            severity,
            distribution_severity: severity,
            cvss: None,
            layer: digest(),
            data_source: "osv".to_string(),
        }
    }

    fn digest() -> Digest {
        format!("sha256:{}", "a".repeat(64)).parse().unwrap()
    }

    #[test]
    fn a_refusal_names_the_worst_vulnerabilities_once_each() {
        let findings = vec![
            finding("libfoo1", "CVE-2024-0001", Severity::High, Some("1.0-2")),
            finding("foo-utils", "CVE-2024-0001", Severity::High, Some("1.0-2")),
            finding("bar", "CVE-2024-0002", Severity::Critical, None),
            finding("baz", "CVE-2024-0003", Severity::Low, Some("2")),
            finding("qux", "CVE-2024-0004", Severity::High, None),
            finding("quux", "CVE-2024-0005", Severity::Medium, None),
        ];
        let refusal = judge_findings("app:1", &digest(), &findings, Severity::Medium).unwrap();
        assert_eq!(refusal.n_vulnerabilities, 4);
        assert_eq!(
            refusal.to_string(),
            "image app:1 has 4 vulnerabilities at or above medium severity: \
             CVE-2024-0002 in bar 1.0-1 (critical, no fix yet), \
             CVE-2024-0001 in foo-utils 1.0-1 (high, fixed in 1.0-2), \
             CVE-2024-0004 in qux 1.0-1 (high, no fix yet) and 1 more"
        );
        assert_eq!(
            judge_findings("app:1", &digest(), &findings, Severity::Critical)
                .unwrap()
                .to_string(),
            "image app:1 has 1 vulnerability at or above critical severity: \
             CVE-2024-0002 in bar 1.0-1 (critical, no fix yet)"
        );
        let below: Vec<Finding> = findings
            .into_iter()
            .filter(|f| f.severity < Severity::High)
            .collect();
        assert_eq!(
            judge_findings("app:1", &digest(), &below, Severity::High),
            None
        );
    }
}

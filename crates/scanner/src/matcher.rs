//! The matcher: each package against its release's advisories, in the
//! distribution's own version ordering (dpkg's, apk's). Debian and Ubuntu
//! advisories name source packages, and Alpine's name origins, so a binary
//! package is matched by its source's name and version. Fixed (a newer version clears it), unfixed (no fix yet) and not
//! affected (the installed version is outside every range, or the
//! distribution says the release never was) are kept apart.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use runtime::digest::Digest;
use serde::{Deserialize, Serialize};

use crate::apk_version::compare_apk;
use crate::index::ImageIndex;
use crate::packages::{InstalledPackage, PackageKind};
use crate::rpm_version::compare_rpm;
use crate::severity::{Cvss, Severity};
use crate::version::{VersionError, compare_debian};
use crate::vulndb::{Advisory, RangeEvent, VulnDb, VulnDbError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingState {
    /// A fixed version exists: upgrade to it.
    Fixed,
    /// Affected, and the distribution has no fix yet.
    Unfixed,
}

/// One vulnerability in one installed package.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Whose package it is (and so whose version ordering applies).
    pub package_kind: PackageKind,
    pub package: String,
    pub architecture: String,
    pub installed_version: String,
    pub source_name: String,
    pub source_version: String,
    pub vulnerability: String,
    pub state: FindingState,
    /// The source version that clears it (with `Fixed`).
    pub fixed_version: Option<String>,
    /// The rating that counts (`--fail-on`, the policy): the
    /// distribution's when it gives one, else the CVSS base score's.
    pub severity: Severity,
    /// The distribution's own rating, as the advisory gives it.
    pub distribution_severity: Severity,
    pub cvss: Option<Cvss>,
    pub layer: Digest,
    /// Which database said so (`osv`, `debian-security-tracker`).
    pub data_source: String,
}

/// Everything the matcher concluded about an image.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MatchReport {
    /// Sorted by package, then vulnerability.
    pub findings: Vec<Finding>,
    /// (package, advisory) pairs the advisories say are not affected.
    pub n_not_affected: usize,
    /// The release keys advisories were looked up under.
    pub releases: Vec<String>,
    pub warnings: Vec<String>,
}

/// The keys an image's distribution release goes by in the database:
/// both Debian's version (`debian:12`, as OSV names it) and its codename
/// (`debian:bookworm`, as the tracker does).
pub fn release_keys(index: &ImageIndex) -> Vec<String> {
    let Some(os) = &index.os else {
        return Vec::new();
    };
    let id = os.id.to_ascii_lowercase();
    let mut keys = Vec::new();
    if let Some(version) = &os.version_id {
        let version = match id.as_str() {
            // Alpine advisories name the minor release (3.20), images the
            // patch release (3.20.3).
            "alpine" => version.split('.').take(2).collect::<Vec<_>>().join("."),
            "debian" | "rocky" | "almalinux" | "rhel" | "centos" => {
                version.split('.').next().unwrap_or(version).to_string()
            }
            _ => version.clone(),
        };
        // OSV's ecosystem names, as `vulndb::release_key` lowers them.
        let distribution = match id.as_str() {
            "rocky" => "rocky linux",
            "rhel" => "red hat",
            other => other,
        };
        keys.push(format!("{distribution}:{version}"));
    }
    if let Some(codename) = &os.version_codename
        && id == "debian"
    {
        keys.push(format!("{id}:{codename}"));
    }
    keys
}

/// Where `version` stands against an advisory's ranges.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    NotAffected,
    Unfixed,
    FixedIn(String),
}

/// OSV's evaluation of ECOSYSTEM events: a version is affected when it is
/// at or past an `introduced` and before the `fixed` (or at or before the
/// `last_affected`) that follows it; `introduced: "0"` means from the start.
pub fn judge(
    version: &str,
    advisory: &Advisory,
    compare: &dyn Fn(&str, &str) -> Result<Ordering, VersionError>,
) -> Result<Verdict, VersionError> {
    if advisory.not_affected {
        return Ok(Verdict::NotAffected);
    }
    let mut start: Option<&str> = None;
    let mut open = false;
    let mut unfixed_match = false;
    let at_or_after = |bound: &str| -> Result<bool, VersionError> {
        Ok(bound == "0" || compare(version, bound)? != Ordering::Less)
    };
    for event in &advisory.events {
        match event {
            RangeEvent::Introduced(introduced) => {
                start = Some(introduced);
                open = true;
            }
            RangeEvent::Fixed(fixed) => {
                if let Some(introduced) = start
                    && open
                    && at_or_after(introduced)?
                    && compare(version, fixed)? == Ordering::Less
                {
                    return Ok(Verdict::FixedIn(fixed.clone()));
                }
                open = false;
            }
            RangeEvent::LastAffected(last) => {
                if let Some(introduced) = start
                    && open
                    && at_or_after(introduced)?
                    && compare(version, last)? != Ordering::Greater
                {
                    unfixed_match = true;
                }
                open = false;
            }
        }
    }
    if let Some(introduced) = start
        && open
        && at_or_after(introduced)?
    {
        unfixed_match = true;
    }
    for listed in &advisory.versions {
        if compare(version, listed)? == Ordering::Equal {
            unfixed_match = true;
        }
    }
    Ok(if unfixed_match {
        Verdict::Unfixed
    } else {
        Verdict::NotAffected
    })
}

/// The package manager's own version ordering: dpkg's for Debian and
/// Ubuntu packages, apk's for Alpine's (which orders every text, valid or
/// not, as apk itself does).
pub fn version_order(kind: PackageKind) -> impl Fn(&str, &str) -> Result<Ordering, VersionError> {
    move |a: &str, b: &str| match kind {
        PackageKind::Deb => compare_debian(a, b),
        PackageKind::Apk => Ok(compare_apk(a, b)),
        PackageKind::Rpm => Ok(compare_rpm(a, b)),
    }
}

/// Matches an image's packages against the database: Debian and Ubuntu
/// packages by source package, Alpine's by origin, each in its own
/// version ordering.
pub fn match_image(index: &ImageIndex, db: &VulnDb) -> Result<MatchReport, VulnDbError> {
    let releases = release_keys(index);
    let mut report = MatchReport {
        releases: releases.clone(),
        ..MatchReport::default()
    };
    if releases.is_empty() {
        report.warnings.push(
            "the image's distribution is unknown (no usable /etc/os-release): nothing was matched"
                .to_string(),
        );
        return Ok(report);
    }
    let reader = db.reader()?;
    // Advisories per source package, read once for all its binaries.
    let mut by_name: BTreeMap<&str, Vec<Advisory>> = BTreeMap::new();
    // RPM advisories name binary packages as often as source ones: an RPM
    // is looked up under both (a finding is kept once per id).
    fn names_of(installed: &InstalledPackage) -> Vec<&str> {
        let mut names = vec![installed.source_name.as_str()];
        if installed.kind == PackageKind::Rpm && installed.name != installed.source_name {
            names.push(installed.name.as_str());
        }
        names
    }
    // Every advisory first, so the findings can be given their room in one
    // allocation: growing a Vec of 67,000 findings by doubling copied and
    // faulted in tens of megabytes per match (BENCHMARKS.md).
    let mut n_candidates = 0;
    for package in &index.packages {
        for name in names_of(&package.installed) {
            if !by_name.contains_key(name) {
                let mut advisories = Vec::new();
                for release in &releases {
                    advisories.extend(reader.advisories_for(release, name)?);
                }
                by_name.insert(name, advisories);
            }
            n_candidates += by_name[name].len();
        }
    }
    let mut findings: Vec<Finding> = Vec::with_capacity(n_candidates);
    for package in &index.packages {
        let installed = &package.installed;
        let names = names_of(installed);
        for advisory in names.iter().flat_map(|name| &by_name[name]) {
            let verdict = match judge(
                &installed.source_version,
                advisory,
                &version_order(installed.kind),
            ) {
                Ok(verdict) => verdict,
                Err(error) => {
                    report.warnings.push(format!(
                        "{} {} against {}: {error}",
                        installed.name, installed.source_version, advisory.id
                    ));
                    continue;
                }
            };
            let (state, fixed_version) = match verdict {
                Verdict::NotAffected => {
                    report.n_not_affected += 1;
                    continue;
                }
                Verdict::Unfixed => (FindingState::Unfixed, None),
                Verdict::FixedIn(fixed) => (FindingState::Fixed, Some(fixed)),
            };
            let finding = Finding {
                package_kind: installed.kind,
                package: installed.name.clone(),
                architecture: installed.architecture.clone(),
                installed_version: installed.version.clone(),
                source_name: installed.source_name.clone(),
                source_version: installed.source_version.clone(),
                vulnerability: advisory.id.clone(),
                state,
                fixed_version,
                severity: match (advisory.severity, &advisory.cvss) {
                    (Severity::Unknown, Some(cvss)) => cvss.rating(),
                    (rating, _) => rating,
                },
                distribution_severity: advisory.severity,
                cvss: advisory.cvss.clone(),
                layer: package.layer.clone(),
                data_source: advisory.source.clone(),
            };
            findings.push(finding);
        }
    }
    // Two sources (or, for an RPM, two names) on one vulnerability of one
    // package: kept once, a known fix winning over none and the higher
    // rating kept. Sorting and merging neighbours costs less than a map
    // keyed by owned strings (one lookup and three clones per finding).
    fn key(finding: &Finding) -> (&str, &str, &str) {
        (
            &finding.package,
            &finding.architecture,
            &finding.vulnerability,
        )
    }
    // Packages come sorted and each one's advisories in id order, so the
    // findings usually are already: a check is one pass, where the sort
    // allocates a scratch buffer half their size.
    if !findings.is_sorted_by(|a, b| key(a) <= key(b)) {
        findings.sort_by(|a, b| key(a).cmp(&key(b)));
    }
    findings.dedup_by(|later, kept| {
        if key(later) != key(kept) {
            return false;
        }
        let severity = kept.severity.max(later.severity);
        let distribution_severity = kept.distribution_severity.max(later.distribution_severity);
        let cvss = kept.cvss.take().or_else(|| later.cvss.take());
        if kept.state == FindingState::Unfixed && later.state == FindingState::Fixed {
            std::mem::swap(kept, later);
        }
        kept.severity = severity;
        kept.distribution_severity = distribution_severity;
        kept.cvss = cvss;
        true
    });
    report.findings = findings;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advisory(events: Vec<RangeEvent>) -> Advisory {
        Advisory {
            id: "CVE-1".into(),
            aliases: vec![],
            release: "debian:12".into(),
            package: "p".into(),
            events,
            versions: vec![],
            not_affected: false,
            severity: Severity::High,
            cvss: None,
            source: "osv".into(),
        }
    }

    #[test]
    fn osv_ranges() {
        use RangeEvent::*;
        let two_ranges = advisory(vec![
            Introduced("0".into()),
            Fixed("1.2-1".into()),
            Introduced("2.0".into()),
            Fixed("2.1~rc1".into()),
        ]);
        let judge = |v: &str, a: &Advisory| judge(v, a, &compare_debian).unwrap();
        assert_eq!(judge("1.1", &two_ranges), Verdict::FixedIn("1.2-1".into()));
        assert_eq!(judge("1.2-1", &two_ranges), Verdict::NotAffected);
        assert_eq!(judge("1.5", &two_ranges), Verdict::NotAffected);
        assert_eq!(
            judge("2.0", &two_ranges),
            Verdict::FixedIn("2.1~rc1".into())
        );
        assert_eq!(judge("2.1", &two_ranges), Verdict::NotAffected);
        let open = advisory(vec![Introduced("1:0".into())]);
        assert_eq!(judge("2.0", &open), Verdict::NotAffected);
        assert_eq!(judge("1:0.1", &open), Verdict::Unfixed);
        let last = advisory(vec![Introduced("0".into()), LastAffected("1.0".into())]);
        assert_eq!(judge("1.0", &last), Verdict::Unfixed);
        assert_eq!(judge("1.0+b1", &last), Verdict::NotAffected);
        let mut listed = advisory(vec![]);
        listed.versions = vec!["3.0-1".into()];
        assert_eq!(judge("3.0-1", &listed), Verdict::Unfixed);
        assert_eq!(judge("3.0-2", &listed), Verdict::NotAffected);
    }
}

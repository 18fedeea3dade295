//! What a scan shows: the package table and, with a vulnerability database,
//! the findings and the update actions that clear them. Rendered to strings;
//! the binary prints them.

use std::fmt::Write as _;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::index::ImageIndex;
use crate::matcher::{FindingState, MatchReport, version_order};
use crate::severity::Severity;

/// Lays out rows under a header in columns two spaces apart, as `kubectl`
/// and `shoal image list` do.
pub fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (column_idx, cell) in row.iter().enumerate() {
            widths[column_idx] = widths[column_idx].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (column_idx, cell) in cells.iter().enumerate() {
            if column_idx + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ", width = widths[column_idx]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// One line naming the image's distribution, e.g. `debian 12 (bookworm)`.
pub fn os_line(index: &ImageIndex) -> String {
    match &index.os {
        None => "unknown (no /etc/os-release)".to_string(),
        Some(os) => {
            let mut text = os.id.clone();
            if let Some(version) = &os.version_id {
                let _ = write!(text, " {version}");
            }
            if let Some(codename) = &os.version_codename {
                let _ = write!(text, " ({codename})");
            }
            text
        }
    }
}

/// The image's packages: name, version, source, layer (short digest).
pub fn package_table(index: &ImageIndex) -> String {
    let rows: Vec<Vec<String>> = index
        .packages
        .iter()
        .map(|package| {
            let installed = &package.installed;
            let source = if installed.source_name == installed.name
                && installed.source_version == installed.version
            {
                String::new()
            } else if installed.source_version == installed.version {
                installed.source_name.clone()
            } else {
                format!("{} {}", installed.source_name, installed.source_version)
            };
            vec![
                installed.name.clone(),
                installed.version.clone(),
                installed.architecture.clone(),
                source,
                package.layer.short().to_string(),
            ]
        })
        .collect();
    format!(
        "image {} ({})\nos {}\n{} packages\n\n{}",
        index.image,
        index.manifest_digest,
        os_line(index),
        index.packages.len(),
        columns(&["PACKAGE", "VERSION", "ARCH", "SOURCE", "LAYER"], &rows)
    )
}

/// "Explain update actions": one source package to upgrade, the version
/// that clears every fixed finding in it, and what that clears.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UpdateAction {
    pub source_name: String,
    pub installed_source_version: String,
    /// The highest fixed version among the source's findings.
    pub upgrade_to: String,
    /// The binary packages built from it that the image holds.
    pub packages: Vec<String>,
    pub vulnerabilities: Vec<String>,
    pub worst_severity: Severity,
}

/// Groups fixed findings by source package, worst first.
pub fn update_actions(report: &MatchReport) -> Vec<UpdateAction> {
    let mut by_source: BTreeMap<&str, UpdateAction> = BTreeMap::new();
    for finding in &report.findings {
        let (FindingState::Fixed, Some(fixed)) = (finding.state, &finding.fixed_version) else {
            continue;
        };
        let action = by_source
            .entry(&finding.source_name)
            .or_insert_with(|| UpdateAction {
                source_name: finding.source_name.clone(),
                installed_source_version: finding.source_version.clone(),
                upgrade_to: fixed.clone(),
                packages: Vec::new(),
                vulnerabilities: Vec::new(),
                worst_severity: finding.severity,
            });
        if version_order(finding.package_kind)(fixed, &action.upgrade_to).is_ok_and(|o| o.is_gt()) {
            action.upgrade_to = fixed.clone();
        }
        if !action.packages.contains(&finding.package) {
            action.packages.push(finding.package.clone());
        }
        if !action.vulnerabilities.contains(&finding.vulnerability) {
            action.vulnerabilities.push(finding.vulnerability.clone());
        }
        action.worst_severity = action.worst_severity.max(finding.severity);
    }
    let mut actions: Vec<UpdateAction> = by_source.into_values().collect();
    actions.sort_by(|a, b| {
        (b.worst_severity, b.vulnerabilities.len(), &a.source_name).cmp(&(
            a.worst_severity,
            a.vulnerabilities.len(),
            &b.source_name,
        ))
    });
    actions
}

/// The findings table, then the counts and the update actions.
pub fn findings_table(index: &ImageIndex, report: &MatchReport) -> String {
    let rows: Vec<Vec<String>> = report
        .findings
        .iter()
        .map(|finding| {
            vec![
                finding.package.clone(),
                finding.installed_version.clone(),
                finding
                    .fixed_version
                    .clone()
                    .unwrap_or_else(|| "(no fix yet)".to_string()),
                finding.vulnerability.clone(),
                finding.severity.to_string(),
                finding
                    .cvss
                    .as_ref()
                    .map_or_else(String::new, |cvss| format!("{:.1}", cvss.base_score)),
                finding.layer.short().to_string(),
            ]
        })
        .collect();
    let n_fixed = report
        .findings
        .iter()
        .filter(|f| f.state == FindingState::Fixed)
        .count();
    let mut out = format!(
        "image {} ({})\nos {}, {} packages\n{} vulnerabilities: {} with a fix, {} without; {} package-advisory pairs do not affect the installed versions\n",
        index.image,
        index.manifest_digest,
        os_line(index),
        index.packages.len(),
        report.findings.len(),
        n_fixed,
        report.findings.len() - n_fixed,
        report.n_not_affected,
    );
    if !rows.is_empty() {
        out.push('\n');
        out.push_str(&columns(
            &[
                "PACKAGE",
                "INSTALLED",
                "FIXED",
                "VULNERABILITY",
                "SEVERITY",
                "CVSS",
                "LAYER",
            ],
            &rows,
        ));
    }
    let actions = update_actions(report);
    if !actions.is_empty() {
        out.push_str("\nupdate actions:\n");
        for action in actions {
            let _ = writeln!(
                out,
                "  upgrade {} {} -> {} ({}): clears {} ({}, worst {})",
                action.source_name,
                action.installed_source_version,
                action.upgrade_to,
                action.packages.join(", "),
                action.vulnerabilities.len(),
                action.vulnerabilities.join(", "),
                action.worst_severity,
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_trim() {
        let text = columns(
            &["A", "LONGER"],
            &[vec!["xyz".into(), "1".into()], vec!["q".into(), "".into()]],
        );
        assert_eq!(text, "A    LONGER\nxyz  1\nq\n");
    }
}

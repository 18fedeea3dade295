//! The package databases the indexer reads: dpkg's `status` (and the
//! one-file-per-package `status.d/` of distroless images) and apk's
//! `installed`. Parsers only: text in, packages out.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Which package manager a package belongs to, so it is compared with that
/// manager's version ordering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageKind {
    Deb,
    Apk,
    Rpm,
}

/// One installed package, before the indexer knows its layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledPackage {
    pub kind: PackageKind,
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// The source package it was built from (dpkg's `Source:`, apk's
    /// origin), its own name when the database names none.
    pub source_name: String,
    pub source_version: String,
}

/// A package database that cannot be read: the file and line (0 for a
/// binary database, which has no lines, and is then left out).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}{}: {message}", if *line > 0 { format!(":{line}") } else { String::new() })]
pub struct ParseError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// A deb822 paragraph: its fields in order and the line it starts on.
struct Paragraph<'a> {
    line: usize,
    fields: Vec<(&'a str, &'a str)>,
}

impl<'a> Paragraph<'a> {
    fn get(&self, name: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim())
    }
}

/// Splits deb822 text into paragraphs; continuation lines (those starting
/// with a space or tab) belong to the field above and are not needed here.
fn paragraphs<'a>(text: &'a str, file: &str) -> Result<Vec<Paragraph<'a>>, ParseError> {
    let mut paragraphs = Vec::new();
    let mut current: Option<Paragraph<'a>> = None;
    for (line_idx, line) in text.lines().enumerate() {
        let line_number = line_idx + 1;
        if line.trim().is_empty() {
            if let Some(paragraph) = current.take() {
                paragraphs.push(paragraph);
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if current.is_none() {
                return Err(ParseError {
                    file: file.to_string(),
                    line: line_number,
                    message: "continuation line outside a paragraph".to_string(),
                });
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ParseError {
                file: file.to_string(),
                line: line_number,
                message: format!("expected \"Field: value\", found {line:?}"),
            });
        };
        current
            .get_or_insert_with(|| Paragraph {
                line: line_number,
                fields: Vec::new(),
            })
            .fields
            .push((name, value));
    }
    if let Some(paragraph) = current.take() {
        paragraphs.push(paragraph);
    }
    Ok(paragraphs)
}

/// Parses a dpkg status file. Packages whose status is `not-installed` or
/// `config-files` (removed, only configuration left) have no files on disk
/// and are left out; every other state is listed.
pub fn parse_dpkg_status(text: &str, file: &str) -> Result<Vec<InstalledPackage>, ParseError> {
    let mut packages = Vec::new();
    for paragraph in paragraphs(text, file)? {
        let missing = |field: &str| ParseError {
            file: file.to_string(),
            line: paragraph.line,
            message: format!("package paragraph has no {field} field"),
        };
        let name = paragraph.get("Package").ok_or_else(|| missing("Package"))?;
        // status.d files of distroless images carry no Status field: what
        // is there is installed.
        if let Some(status) = paragraph.get("Status") {
            let state = status.split_whitespace().nth(2).unwrap_or("");
            if state == "not-installed" || state == "config-files" {
                continue;
            }
        }
        let version = paragraph.get("Version").ok_or_else(|| missing("Version"))?;
        let architecture = paragraph.get("Architecture").unwrap_or("");
        let (source_name, source_version) = match paragraph.get("Source") {
            None | Some("") => (name, version),
            Some(source) => match source.split_once('(') {
                Some((source_name, rest)) => {
                    let source_version = rest.strip_suffix(')').ok_or_else(|| ParseError {
                        file: file.to_string(),
                        line: paragraph.line,
                        message: format!("malformed Source field {source:?}"),
                    })?;
                    (source_name.trim(), source_version.trim())
                }
                None => (source, version),
            },
        };
        packages.push(InstalledPackage {
            kind: PackageKind::Deb,
            name: name.to_string(),
            version: version.to_string(),
            architecture: architecture.to_string(),
            source_name: source_name.to_string(),
            source_version: source_version.to_string(),
        });
    }
    Ok(packages)
}

/// The first line of the listing the layer reader makes of an rpm
/// database: the SQLite file is read once, when its layer is, and its
/// packages kept as text (the per-layer cache holds text, not megabytes of
/// database); then one line per package, tab-separated: name, epoch (empty
/// when none), version, release, arch, source RPM.
pub const RPM_LISTING_HEADER: &str = "shoal rpm listing 1";
/// Starts the listing's second line when the database could not be read.
pub const RPM_LISTING_ERROR: &str = "error\t";

/// The listing of an rpm database file (`rpmdb.sqlite`), or the line that
/// says why there is none.
pub fn rpm_listing(database: &[u8]) -> String {
    let mut text = format!("{RPM_LISTING_HEADER}\n");
    match crate::rpmdb::read_sqlite(database) {
        Ok(found) => {
            for package in found {
                let epoch = package.epoch.map(|e| e.to_string()).unwrap_or_default();
                let _ = writeln!(
                    text,
                    "{}\t{epoch}\t{}\t{}\t{}\t{}",
                    package.name,
                    package.version,
                    package.release,
                    package.arch,
                    package.source_rpm
                );
            }
        }
        Err(error) => {
            let _ = writeln!(text, "{RPM_LISTING_ERROR}{error}");
        }
    }
    text
}

/// Parses the listing `rpm_listing` made of `file`.
pub fn parse_rpm_listing(text: &str, file: &str) -> Result<Vec<InstalledPackage>, ParseError> {
    let error = |line: usize, message: String| ParseError {
        file: file.to_string(),
        line,
        message,
    };
    let mut lines = text.lines();
    if lines.next() != Some(RPM_LISTING_HEADER) {
        return Err(error(1, "not an rpm database listing".to_string()));
    }
    let mut packages = Vec::new();
    for line in lines {
        if let Some(message) = line.strip_prefix(RPM_LISTING_ERROR) {
            // The database itself is the file; it has no lines to name.
            return Err(error(0, message.to_string()));
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [name, epoch, version, release, arch, source_rpm] = fields[..] else {
            return Err(error(
                0,
                format!("a listing line has {} fields", fields.len()),
            ));
        };
        let package = crate::rpmdb::RpmPackage {
            name: name.to_string(),
            epoch: epoch.parse().ok(),
            version: version.to_string(),
            release: release.to_string(),
            arch: arch.to_string(),
            source_rpm: source_rpm.to_string(),
        };
        let evr = package.evr();
        packages.push(InstalledPackage {
            kind: PackageKind::Rpm,
            source_name: package.source_name(),
            name: package.name,
            version: evr.clone(),
            architecture: package.arch,
            source_version: evr,
        });
    }
    Ok(packages)
}

/// Parses apk's `installed` database: records of `X:value` lines separated
/// by blank lines (`P` name, `V` version, `A` architecture, `o` origin).
pub fn parse_apk_installed(text: &str, file: &str) -> Result<Vec<InstalledPackage>, ParseError> {
    let mut packages = Vec::new();
    let mut record: Vec<(char, &str)> = Vec::new();
    let mut record_line = 1;
    let mut finish = |record: &mut Vec<(char, &str)>, line: usize| -> Result<(), ParseError> {
        if record.is_empty() {
            return Ok(());
        }
        let get = |key: char| record.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let missing = |what: &str| ParseError {
            file: file.to_string(),
            line,
            message: format!("apk record has no {what}"),
        };
        let name = get('P').ok_or_else(|| missing("P: (name)"))?;
        let version = get('V').ok_or_else(|| missing("V: (version)"))?;
        packages.push(InstalledPackage {
            kind: PackageKind::Apk,
            name: name.to_string(),
            version: version.to_string(),
            architecture: get('A').unwrap_or("").to_string(),
            source_name: get('o').unwrap_or(name).to_string(),
            source_version: version.to_string(),
        });
        record.clear();
        Ok(())
    };
    for (line_idx, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            finish(&mut record, record_line)?;
            continue;
        }
        if record.is_empty() {
            record_line = line_idx + 1;
        }
        let mut chars = line.chars();
        match (chars.next(), chars.next()) {
            (Some(key), Some(':')) => record.push((key, &line[2..])),
            _ => {
                return Err(ParseError {
                    file: file.to_string(),
                    line: line_idx + 1,
                    message: format!("expected \"X:value\", found {line:?}"),
                });
            }
        }
    }
    finish(&mut record, record_line)?;
    Ok(packages)
}

/// What `/etc/os-release` says about the distribution.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsRelease {
    pub id: String,
    pub version_id: Option<String>,
    pub version_codename: Option<String>,
    pub pretty_name: Option<String>,
}

/// Parses os-release's `KEY=value` lines (values optionally quoted).
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut release = OsRelease::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value)
            .to_string();
        match key {
            "ID" => release.id = value,
            "VERSION_ID" => release.version_id = Some(value),
            "VERSION_CODENAME" => release.version_codename = Some(value),
            "PRETTY_NAME" => release.pretty_name = Some(value),
            _ => {}
        }
    }
    release
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_source_defaults_and_versions() {
        let text = "Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\nSource: openssl\nVersion: 3.0.11-1~deb12u2\nDescription: x\n more\n\nPackage: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2.15-2+b2\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: libc6\nStatus: install ok installed\nSource: glibc (2.36-9+deb12u4)\nVersion: 2.36-9+deb12u4+b1\n";
        let packages = parse_dpkg_status(text, "status").unwrap();
        let summary: Vec<(&str, &str, &str, &str)> = packages
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.version.as_str(),
                    p.source_name.as_str(),
                    p.source_version.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("libssl3", "3.0.11-1~deb12u2", "openssl", "3.0.11-1~deb12u2"),
                ("bash", "5.2.15-2+b2", "bash", "5.2.15-2+b2"),
                ("libc6", "2.36-9+deb12u4+b1", "glibc", "2.36-9+deb12u4"),
            ]
        );
    }

    #[test]
    fn dpkg_errors_name_file_and_line() {
        let error =
            parse_dpkg_status("Package: a\nVersion: 1\n\ngarbage line\n", "x/status").unwrap_err();
        assert_eq!(
            error.to_string(),
            "x/status:4: expected \"Field: value\", found \"garbage line\""
        );
        let error = parse_dpkg_status("Package: a\n\nPackage: b\nVersion: 2\n", "s").unwrap_err();
        assert_eq!(
            error.to_string(),
            "s:1: package paragraph has no Version field"
        );
    }

    #[test]
    fn apk_records() {
        let text = "C:Q1abc=\nP:musl\nV:1.2.5-r0\nA:x86_64\no:musl\n\nP:libcrypto3\nV:3.3.1-r0\nA:x86_64\no:openssl\n";
        let packages = parse_apk_installed(text, "installed").unwrap();
        assert_eq!(packages.len(), 2);
        assert_eq!(packages[1].source_name, "openssl");
        assert_eq!(packages[1].version, "3.3.1-r0");
        assert!(parse_apk_installed("P:x\n", "installed").is_err());
    }

    #[test]
    fn os_release_fields() {
        let release =
            parse_os_release("ID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n# c\n");
        assert_eq!(release.id, "debian");
        assert_eq!(release.version_id.as_deref(), Some("12"));
        assert_eq!(release.version_codename.as_deref(), Some("bookworm"));
    }
}

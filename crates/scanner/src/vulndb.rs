//! The local vulnerability database: advisories imported from OSV files (one
//! JSON advisory each, or a zip of them as OSV publishes per ecosystem) and
//! from the Debian Security Tracker's JSON, kept in redb tables under
//! `DATA_DIR/scanner/vulndb.redb`. Each file is parsed whole before anything
//! is written and then written in one transaction, so a bad file changes
//! nothing.
//!
//! Tables:
//! - `vulndb_advisories`: `release \0 package \0 source \0 id` -> advisory
//!   JSON, so the matcher reads one package's advisories with one range.
//! - `vulndb_ids`: `source \0 id` -> the advisory keys it wrote, so a
//!   re-imported advisory replaces its old records.
//! - `vulndb_sources`: source -> its import date and file.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::severity::{Cvss, Severity};

const ADVISORIES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("vulndb_advisories");
const IDS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("vulndb_ids");
const SOURCES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("vulndb_sources");

pub const SOURCE_OSV: &str = "osv";
pub const SOURCE_DEBIAN_TRACKER: &str = "debian-security-tracker";

#[derive(Debug, thiserror::Error)]
pub enum VulnDbError {
    #[error("vulnerability database {path}: {source}")]
    Database { path: PathBuf, source: redb::Error },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Malformed {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{path}: not an OSV advisory, a zip of them, or the Debian Security Tracker's JSON")]
    UnknownFormat { path: PathBuf },
}

/// One OSV range event (`introduced`, `fixed`, `last_affected`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RangeEvent {
    Introduced(String),
    Fixed(String),
    LastAffected(String),
}

/// What an advisory says about one package in one release.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Advisory {
    /// The vulnerability: a CVE id, or the advisory's own (DSA-…, OSV id).
    pub id: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `debian:12`, `debian:bookworm`, `ubuntu:22.04`, `alpine:3.20`.
    pub release: String,
    /// The package as the distribution's advisories name it (Debian: the
    /// source package).
    pub package: String,
    /// Ranges of affected versions, in order; empty with `not_affected`.
    pub events: Vec<RangeEvent>,
    /// Versions listed as affected outside any range (OSV `versions`).
    #[serde(default)]
    pub versions: Vec<String>,
    /// The distribution says this release was never affected.
    #[serde(default)]
    pub not_affected: bool,
    /// The distribution's rating (`Unknown` when it gives none).
    pub severity: Severity,
    /// The CVSS v3 base vector and score the advisory gives, if any.
    #[serde(default)]
    pub cvss: Option<Cvss>,
    pub source: String,
}

/// A source's record in `vulndb status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SourceStatus {
    pub source: String,
    pub imported_at_unix_seconds: u64,
    pub last_file: String,
    pub n_advisories: u64,
}

#[derive(Serialize, Deserialize)]
struct SourceRecord {
    imported_at_unix_seconds: u64,
    last_file: String,
}

/// What one file's import wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportReport {
    pub source: String,
    /// Distinct (source, id) advisories in the file.
    pub n_advisories: usize,
    /// Records, one per (release, package) an advisory names.
    pub n_records: usize,
}

pub struct VulnDb {
    path: PathBuf,
    database: Database,
}

fn now_unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Lower-case release names both kinds of source agree on.
pub fn release_key(ecosystem: &str) -> Option<String> {
    let mut parts = ecosystem.split(':');
    let distribution = parts.next()?.trim().to_ascii_lowercase();
    let rest: Vec<&str> = parts.collect();
    let version = match distribution.as_str() {
        // "Ubuntu:22.04:LTS", "Ubuntu:Pro:18.04:LTS".
        "ubuntu" => rest
            .iter()
            .find(|part| part.starts_with(|c: char| c.is_ascii_digit()))?
            .to_string(),
        "alpine" => rest.first()?.trim_start_matches('v').to_string(),
        _ => rest.first()?.to_string(),
    };
    if version.is_empty() {
        return None;
    }
    Some(format!("{distribution}:{}", version.to_ascii_lowercase()))
}

fn advisory_key(advisory: &Advisory) -> String {
    format!(
        "{}\0{}\0{}\0{}",
        advisory.release, advisory.package, advisory.source, advisory.id
    )
}

impl VulnDb {
    /// Opens (creating when needed) `DATA_DIR/scanner/vulndb.redb`.
    pub fn open(data_dir: &Path) -> Result<VulnDb, VulnDbError> {
        let dir = data_dir.join("scanner");
        std::fs::create_dir_all(&dir).map_err(|source| VulnDbError::Read {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join("vulndb.redb");
        let fail = |path: &Path| {
            let path = path.to_path_buf();
            move |error: redb::Error| VulnDbError::Database {
                path: path.clone(),
                source: error,
            }
        };
        let database = Database::create(&path)
            .map_err(redb::Error::from)
            .map_err(fail(&path))?;
        let write = database
            .begin_write()
            .map_err(redb::Error::from)
            .map_err(fail(&path))?;
        for table in [ADVISORIES, IDS, SOURCES] {
            write
                .open_table(table)
                .map_err(redb::Error::from)
                .map_err(fail(&path))?;
        }
        write
            .commit()
            .map_err(redb::Error::from)
            .map_err(fail(&path))?;
        Ok(VulnDb { path, database })
    }

    fn fail(&self, error: impl Into<redb::Error>) -> VulnDbError {
        VulnDbError::Database {
            path: self.path.clone(),
            source: error.into(),
        }
    }

    /// Imports one file: an OSV advisory (`.json`, an object or an array of
    /// them), a zip of OSV advisories, or the Debian Security Tracker's JSON.
    pub fn import_file(&self, path: &Path) -> Result<ImportReport, VulnDbError> {
        let read_error = |source| VulnDbError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut file| file.read_to_end(&mut bytes))
            .map_err(read_error)?;
        let display = path.display().to_string();
        let (source, replace_all, advisories) = if bytes.starts_with(b"PK\x03\x04") {
            (SOURCE_OSV, false, parse_osv_zip(&bytes, &display)?)
        } else {
            let value: Value =
                serde_json::from_slice(&bytes).map_err(|error| VulnDbError::Malformed {
                    path: display.clone(),
                    line: error.line(),
                    message: error.to_string(),
                })?;
            if is_osv(&value) || value.as_array().is_some_and(|a| a.iter().all(is_osv)) {
                (SOURCE_OSV, false, parse_osv_value(&value, &display)?)
            } else if value.is_object() {
                (
                    SOURCE_DEBIAN_TRACKER,
                    true,
                    parse_debian_tracker(&value, &display)?,
                )
            } else {
                return Err(VulnDbError::UnknownFormat {
                    path: path.to_path_buf(),
                });
            }
        };
        self.write(source, replace_all, &advisories, &display)
    }

    /// Writes one file's advisories in one transaction. `replace_all`: the
    /// file is the source's whole data set (the tracker's JSON), so every
    /// earlier record of the source goes.
    fn write(
        &self,
        source: &str,
        replace_all: bool,
        advisories: &[Advisory],
        file: &str,
    ) -> Result<ImportReport, VulnDbError> {
        let write = self.database.begin_write().map_err(|e| self.fail(e))?;
        let n_ids;
        {
            let mut table = write.open_table(ADVISORIES).map_err(|e| self.fail(e))?;
            let mut ids = write.open_table(IDS).map_err(|e| self.fail(e))?;
            let id_prefix = format!("{source}\0");
            let mut stale_ids: Vec<String> = Vec::new();
            if replace_all {
                for entry in ids.range(id_prefix.as_str()..).map_err(|e| self.fail(e))? {
                    let (key, _) = entry.map_err(|e| self.fail(e))?;
                    if !key.value().starts_with(&id_prefix) {
                        break;
                    }
                    stale_ids.push(key.value().to_string());
                }
            } else {
                stale_ids.extend(advisories.iter().map(|a| format!("{source}\0{}", a.id)));
                stale_ids.sort();
                stale_ids.dedup();
            }
            for id_key in &stale_ids {
                let old_keys: Vec<String> =
                    match ids.remove(id_key.as_str()).map_err(|e| self.fail(e))? {
                        Some(value) => serde_json::from_slice(value.value()).unwrap_or_default(),
                        None => Vec::new(),
                    };
                for old_key in old_keys {
                    table.remove(old_key.as_str()).map_err(|e| self.fail(e))?;
                }
            }
            let mut keys_by_id: std::collections::BTreeMap<&str, Vec<String>> =
                std::collections::BTreeMap::new();
            for advisory in advisories {
                let key = advisory_key(advisory);
                let value = crate::record::encode(advisory);
                table
                    .insert(key.as_str(), value.as_slice())
                    .map_err(|e| self.fail(e))?;
                keys_by_id.entry(&advisory.id).or_default().push(key);
            }
            n_ids = keys_by_id.len();
            for (id, keys) in keys_by_id {
                let value = serde_json::to_vec(&keys).expect("keys serialize");
                ids.insert(format!("{source}\0{id}").as_str(), value.as_slice())
                    .map_err(|e| self.fail(e))?;
            }
            let mut sources = write.open_table(SOURCES).map_err(|e| self.fail(e))?;
            let record = SourceRecord {
                imported_at_unix_seconds: now_unix_seconds(),
                last_file: file.to_string(),
            };
            sources
                .insert(
                    source,
                    serde_json::to_vec(&record)
                        .expect("records serialize")
                        .as_slice(),
                )
                .map_err(|e| self.fail(e))?;
        }
        write.commit().map_err(|e| self.fail(e))?;
        Ok(ImportReport {
            source: source.to_string(),
            n_advisories: n_ids,
            n_records: advisories.len(),
        })
    }

    /// Every source with its import date and number of advisories.
    pub fn status(&self) -> Result<Vec<SourceStatus>, VulnDbError> {
        let read = self.database.begin_read().map_err(|e| self.fail(e))?;
        let sources = read.open_table(SOURCES).map_err(|e| self.fail(e))?;
        let ids = read.open_table(IDS).map_err(|e| self.fail(e))?;
        let mut statuses = Vec::new();
        for entry in sources.iter().map_err(|e| self.fail(e))? {
            let (key, value) = entry.map_err(|e| self.fail(e))?;
            let source = key.value().to_string();
            let Ok(record) = serde_json::from_slice::<SourceRecord>(value.value()) else {
                continue;
            };
            let prefix = format!("{source}\0");
            let mut n_advisories = 0;
            for id in ids.range(prefix.as_str()..).map_err(|e| self.fail(e))? {
                let (id, _) = id.map_err(|e| self.fail(e))?;
                if !id.value().starts_with(&prefix) {
                    break;
                }
                n_advisories += 1;
            }
            statuses.push(SourceStatus {
                source,
                imported_at_unix_seconds: record.imported_at_unix_seconds,
                last_file: record.last_file,
                n_advisories,
            });
        }
        Ok(statuses)
    }

    /// The advisories for one package of one release.
    pub fn advisories_for(
        &self,
        release: &str,
        package: &str,
    ) -> Result<Vec<Advisory>, VulnDbError> {
        self.reader()?.advisories_for(release, package)
    }

    /// A snapshot of the advisories for many lookups (one read transaction
    /// for a whole image rather than one per package).
    pub fn reader(&self) -> Result<Reader, VulnDbError> {
        let read = self.database.begin_read().map_err(|e| self.fail(e))?;
        let table = read.open_table(ADVISORIES).map_err(|e| self.fail(e))?;
        Ok(Reader {
            path: self.path.clone(),
            table,
        })
    }

    /// The oldest import among the sources, if any.
    pub fn oldest_import_unix_seconds(&self) -> Result<Option<u64>, VulnDbError> {
        Ok(self
            .status()?
            .iter()
            .map(|status| status.imported_at_unix_seconds)
            .min())
    }
}

/// Reads advisories from one snapshot of the database.
pub struct Reader {
    path: PathBuf,
    table: redb::ReadOnlyTable<&'static str, &'static [u8]>,
}

impl Reader {
    /// The advisories for one package of one release.
    pub fn advisories_for(
        &self,
        release: &str,
        package: &str,
    ) -> Result<Vec<Advisory>, VulnDbError> {
        let fail = |error: redb::StorageError| VulnDbError::Database {
            path: self.path.clone(),
            source: error.into(),
        };
        let prefix = format!("{release}\0{package}\0");
        let mut found = Vec::new();
        for entry in self.table.range(prefix.as_str()..).map_err(fail)? {
            let (key, value) = entry.map_err(fail)?;
            if !key.value().starts_with(&prefix) {
                break;
            }
            if let Some(advisory) = crate::record::decode(value.value()) {
                found.push(advisory);
            }
        }
        Ok(found)
    }
}

fn is_osv(value: &Value) -> bool {
    value.get("id").is_some_and(Value::is_string)
        && (value.get("affected").is_some() || value.get("modified").is_some())
}

fn parse_osv_zip(bytes: &[u8], path: &str) -> Result<Vec<Advisory>, VulnDbError> {
    let malformed = |message: String| VulnDbError::Malformed {
        path: path.to_string(),
        line: 0,
        message,
    };
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|error| malformed(format!("not a valid zip: {error}")))?;
    let mut advisories = Vec::new();
    for entry_idx in 0..archive.len() {
        let mut entry = archive
            .by_index(entry_idx)
            .map_err(|error| malformed(format!("zip entry {entry_idx}: {error}")))?;
        let entry_name = entry.name().map(|n| n.into_owned()).unwrap_or_default();
        if !entry.is_file() || !entry_name.ends_with(".json") {
            continue;
        }
        let name = format!("{path}!{entry_name}");
        let mut text = Vec::new();
        entry
            .read_to_end(&mut text)
            .map_err(|error| malformed(format!("{entry_name}: {error}")))?;
        let value: Value =
            serde_json::from_slice(&text).map_err(|error| VulnDbError::Malformed {
                path: name.clone(),
                line: error.line(),
                message: error.to_string(),
            })?;
        advisories.extend(parse_osv_value(&value, &name)?);
    }
    Ok(advisories)
}

fn parse_osv_value(value: &Value, path: &str) -> Result<Vec<Advisory>, VulnDbError> {
    match value {
        Value::Array(items) => {
            let mut advisories = Vec::new();
            for item in items {
                advisories.extend(parse_osv(item, path)?);
            }
            Ok(advisories)
        }
        _ => parse_osv(value, path),
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// An OSV `severity` list's CVSS v3 vector, scored; a malformed one fails
/// the file's import like any other malformed field. Other CVSS versions
/// (v2, v4) are not scored and are left out.
fn cvss_of(severity: Option<&Value>, id: &str, path: &str) -> Result<Option<Cvss>, VulnDbError> {
    let Some(ratings) = severity.and_then(Value::as_array) else {
        return Ok(None);
    };
    for rating in ratings {
        if rating.get("type").and_then(Value::as_str) != Some("CVSS_V3") {
            continue;
        }
        let vector = rating.get("score").and_then(Value::as_str).unwrap_or("");
        return Cvss::from_v3_vector(vector)
            .map(Some)
            .map_err(|error| VulnDbError::Malformed {
                path: path.to_string(),
                line: 0,
                message: format!("{id}: {error}"),
            });
    }
    Ok(None)
}

/// One OSV advisory: a record per affected (ecosystem, package) with
/// ECOSYSTEM ranges. Other range types (SEMVER, GIT) describe upstream
/// sources, not distribution packages, and are left out.
fn parse_osv(value: &Value, path: &str) -> Result<Vec<Advisory>, VulnDbError> {
    let malformed = |message: String| VulnDbError::Malformed {
        path: path.to_string(),
        line: 0,
        message,
    };
    let id = value
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("OSV advisory has no id".to_string()))?;
    let aliases = strings(value.get("aliases"));
    let advisory_rating = value
        .pointer("/database_specific/severity")
        .and_then(Value::as_str)
        .map(Severity::from_rating);
    let text_rating = value
        .get("severity")
        .and_then(Value::as_array)
        .and_then(|ratings| {
            ratings.iter().find_map(|rating| {
                let kind = rating.get("type")?.as_str()?;
                // Ratings given as words (Ubuntu's, Debian's) are the
                // distribution's; CVSS vectors are read apart.
                (!kind.starts_with("CVSS")).then(|| rating.get("score")?.as_str())?
            })
        })
        .map(Severity::from_rating);
    let advisory_cvss = cvss_of(value.get("severity"), id, path)?;
    let mut advisories = Vec::new();
    let affected = value
        .get("affected")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (affected_idx, entry) in affected.iter().enumerate() {
        let ecosystem = entry.pointer("/package/ecosystem").and_then(Value::as_str);
        let name = entry.pointer("/package/name").and_then(Value::as_str);
        let (Some(ecosystem), Some(name)) = (ecosystem, name) else {
            return Err(malformed(format!(
                "{id}: affected[{affected_idx}] has no package ecosystem and name"
            )));
        };
        let Some(release) = release_key(ecosystem) else {
            // An ecosystem without a release (PyPI, npm…): not an OS package.
            continue;
        };
        let mut events = Vec::new();
        for range in entry
            .get("ranges")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if range.get("type").and_then(Value::as_str) != Some("ECOSYSTEM") {
                continue;
            }
            for event in range
                .get("events")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let event = match (
                    event.get("introduced").and_then(Value::as_str),
                    event.get("fixed").and_then(Value::as_str),
                    event.get("last_affected").and_then(Value::as_str),
                ) {
                    (Some(version), None, None) => RangeEvent::Introduced(version.to_string()),
                    (None, Some(version), None) => RangeEvent::Fixed(version.to_string()),
                    (None, None, Some(version)) => RangeEvent::LastAffected(version.to_string()),
                    _ => {
                        return Err(malformed(format!(
                            "{id}: affected[{affected_idx}] has a range event that is not one of introduced, fixed, last_affected"
                        )));
                    }
                };
                events.push(event);
            }
        }
        let versions = strings(entry.get("versions"));
        if events.is_empty() && versions.is_empty() {
            continue;
        }
        let severity = entry
            .pointer("/ecosystem_specific/urgency")
            .or_else(|| entry.pointer("/ecosystem_specific/severity"))
            .or_else(|| entry.pointer("/database_specific/severity"))
            .and_then(Value::as_str)
            .map(Severity::from_rating)
            .or(text_rating)
            .or(advisory_rating)
            .unwrap_or(Severity::Unknown);
        let cvss = cvss_of(entry.get("severity"), id, path)?.or_else(|| advisory_cvss.clone());
        advisories.push(Advisory {
            id: id.to_string(),
            aliases: aliases.clone(),
            release,
            package: name.to_string(),
            events,
            versions,
            not_affected: false,
            severity,
            cvss,
            source: SOURCE_OSV.to_string(),
        });
    }
    Ok(advisories)
}

/// The tracker's JSON: `{source package: {CVE: {releases: {codename:
/// {status, fixed_version, urgency}}}}}`.
fn parse_debian_tracker(value: &Value, path: &str) -> Result<Vec<Advisory>, VulnDbError> {
    let malformed = |message: String| VulnDbError::Malformed {
        path: path.to_string(),
        line: 0,
        message,
    };
    let packages = value.as_object().expect("checked by the caller");
    let mut advisories = Vec::new();
    for (package, vulnerabilities) in packages {
        let vulnerabilities = vulnerabilities
            .as_object()
            .ok_or_else(|| malformed(format!("package {package:?}: expected an object of CVEs")))?;
        for (id, vulnerability) in vulnerabilities {
            let Some(releases) = vulnerability.get("releases").and_then(Value::as_object) else {
                return Err(malformed(format!("{package} {id}: no releases object")));
            };
            for (codename, release) in releases {
                let status = release.get("status").and_then(Value::as_str).unwrap_or("");
                let fixed_version = release.get("fixed_version").and_then(Value::as_str);
                let severity = release
                    .get("urgency")
                    .and_then(Value::as_str)
                    .map_or(Severity::Unknown, Severity::from_rating);
                let mut advisory = Advisory {
                    id: id.clone(),
                    aliases: Vec::new(),
                    release: format!("debian:{codename}"),
                    package: package.clone(),
                    events: Vec::new(),
                    versions: Vec::new(),
                    not_affected: false,
                    severity,
                    cvss: None,
                    source: SOURCE_DEBIAN_TRACKER.to_string(),
                };
                match (status, fixed_version) {
                    // "0": the release never had the vulnerable code.
                    ("resolved", Some("0")) => advisory.not_affected = true,
                    ("resolved", Some(fixed)) => {
                        advisory.events = vec![
                            RangeEvent::Introduced("0".to_string()),
                            RangeEvent::Fixed(fixed.to_string()),
                        ];
                    }
                    ("open" | "undetermined", _) => {
                        advisory.events = vec![RangeEvent::Introduced("0".to_string())];
                    }
                    (other, _) => {
                        return Err(malformed(format!(
                            "{package} {id} {codename}: unknown status {other:?}"
                        )));
                    }
                }
                advisories.push(advisory);
            }
        }
    }
    Ok(advisories)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_keys() {
        assert_eq!(release_key("Debian:12").as_deref(), Some("debian:12"));
        assert_eq!(
            release_key("Ubuntu:22.04:LTS").as_deref(),
            Some("ubuntu:22.04")
        );
        assert_eq!(
            release_key("Ubuntu:Pro:18.04:LTS").as_deref(),
            Some("ubuntu:18.04")
        );
        assert_eq!(release_key("Alpine:v3.20").as_deref(), Some("alpine:3.20"));
        assert_eq!(release_key("PyPI"), None);
    }
}

//! A pod's volumes, made ready on the machine before its containers start:
//! `emptyDir` (a directory the pod's life long), `hostPath` (with its type
//! checks), and `configMap`, `secret`, `downwardAPI` and `projected` (files
//! written from the objects). Each is a host directory or file the runtime
//! bind-mounts; all of them live under the pod's own directory, so removing
//! it removes them.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath, Pod, Secret, Volume};

/// Why a volume could not be made ready (a `FailedMount` event's message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MountVolume.SetUp failed for volume {volume:?} : {message}")]
pub struct MountError {
    pub volume: String,
    pub message: String,
}

/// Where a pod's volumes live: `DATA_DIR/pods/<uid>/volumes/<name>`.
pub fn pod_dir(data_dir: &Path, uid: &str) -> PathBuf {
    data_dir.join("pods").join(uid)
}

/// The objects the pod's volumes name, fetched before `prepare`.
#[derive(Default)]
pub struct Sources {
    pub config_maps: BTreeMap<String, Option<ConfigMap>>,
    pub secrets: BTreeMap<String, Option<Secret>>,
}

/// The ConfigMaps and Secrets the pod's volumes name.
pub fn references(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let mut config_maps = Vec::new();
    let mut secrets = Vec::new();
    for volume in pod
        .spec
        .as_ref()
        .and_then(|spec| spec.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        if let Some(source) = &volume.config_map {
            config_maps.push(source.name.clone());
        }
        if let Some(source) = &volume.secret
            && let Some(name) = &source.secret_name
        {
            secrets.push(name.clone());
        }
        for projection in volume
            .projected
            .as_ref()
            .and_then(|projected| projected.sources.as_ref())
            .into_iter()
            .flatten()
        {
            if let Some(source) = &projection.config_map {
                config_maps.push(source.name.clone());
            }
            if let Some(source) = &projection.secret {
                secrets.push(source.name.clone());
            }
        }
    }
    config_maps.sort();
    config_maps.dedup();
    secrets.sort();
    secrets.dedup();
    (config_maps, secrets)
}

fn io_error(volume: &str, what: &str, error: std::io::Error) -> MountError {
    MountError {
        volume: volume.to_string(),
        message: format!("{what}: {error}"),
    }
}

/// Writes `files` (relative path → bytes) into `dir` with `mode`, replacing
/// what was there.
fn write_files(
    volume: &str,
    dir: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    mode: u32,
) -> Result<(), MountError> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| io_error(volume, "cannot create", e))?;
    for (path, bytes) in files {
        if path.split('/').any(|part| part == ".." || part.is_empty()) || path.starts_with('/') {
            return Err(MountError {
                volume: volume.to_string(),
                message: format!("invalid path {path:?}"),
            });
        }
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_error(volume, "cannot create", e))?;
        }
        std::fs::write(&target, bytes).map_err(|e| io_error(volume, "cannot write", e))?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| io_error(volume, "cannot set the mode of", e))?;
    }
    Ok(())
}

/// Picks `items` (key → path) out of `data`, or every key as its own file.
fn select(
    volume: &str,
    kind: &str,
    name: &str,
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    optional: bool,
) -> Result<BTreeMap<String, Vec<u8>>, MountError> {
    let Some(items) = items.filter(|items| !items.is_empty()) else {
        return Ok(data);
    };
    let mut files = BTreeMap::new();
    for item in items {
        match data.get(&item.key) {
            Some(bytes) => {
                files.insert(item.path.clone(), bytes.clone());
            }
            None if optional => {}
            None => {
                return Err(MountError {
                    volume: volume.to_string(),
                    message: format!(
                        "configuration error: key {:?} not found in {kind} {name:?}",
                        item.key
                    ),
                });
            }
        }
    }
    Ok(files)
}

fn config_map_data(config_map: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = config_map
        .data
        .iter()
        .flatten()
        .map(|(key, value)| (key.clone(), value.clone().into_bytes()))
        .collect();
    for (key, value) in config_map.binary_data.iter().flatten() {
        data.insert(key.clone(), value.0.clone());
    }
    data
}

fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(key, value)| (key.clone(), value.0.clone()))
        .collect();
    for (key, value) in secret.string_data.iter().flatten() {
        data.insert(key.clone(), value.clone().into_bytes());
    }
    data
}

fn missing(volume: &str, kind: &str, name: &str) -> MountError {
    MountError {
        volume: volume.to_string(),
        message: format!("{kind} {name:?} not found"),
    }
}

/// The files of a ConfigMap or Secret source (`None`: optional and absent).
fn config_map_files(
    volume: &str,
    sources: &Sources,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    optional: bool,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, MountError> {
    match sources.config_maps.get(name) {
        Some(Some(config_map)) => select(
            volume,
            "ConfigMap",
            name,
            config_map_data(config_map),
            items,
            optional,
        )
        .map(Some),
        _ if optional => Ok(None),
        _ => Err(missing(volume, "configmap", name)),
    }
}

fn secret_files(
    volume: &str,
    sources: &Sources,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    optional: bool,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, MountError> {
    match sources.secrets.get(name) {
        Some(Some(secret)) => {
            select(volume, "Secret", name, secret_data(secret), items, optional).map(Some)
        }
        _ if optional => Ok(None),
        _ => Err(missing(volume, "secret", name)),
    }
}

/// Makes one volume ready; returns the host path to mount.
pub fn prepare(
    volume: &Volume,
    pod: &Pod,
    dir: &Path,
    sources: &Sources,
    host_ip: &str,
) -> Result<PathBuf, MountError> {
    let name = volume.name.as_str();
    let path = dir.join(name);
    if let Some(host) = &volume.host_path {
        let host_path = PathBuf::from(&host.path);
        let kind = host.type_.as_deref().unwrap_or("");
        let fail = |message: String| MountError {
            volume: name.to_string(),
            message,
        };
        match kind {
            "DirectoryOrCreate" => std::fs::create_dir_all(&host_path)
                .map_err(|e| io_error(name, "cannot create", e))?,
            "Directory" if !host_path.is_dir() => {
                return Err(fail(format!(
                    "hostPath type check failed: {} is not a directory",
                    host.path
                )));
            }
            "FileOrCreate" if !host_path.exists() => {
                if let Some(parent) = host_path.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| io_error(name, "cannot create", e))?;
                }
                std::fs::write(&host_path, b"").map_err(|e| io_error(name, "cannot create", e))?;
            }
            "File" if !host_path.is_file() => {
                return Err(fail(format!(
                    "hostPath type check failed: {} is not a file",
                    host.path
                )));
            }
            "Socket" | "CharDevice" | "BlockDevice" if !host_path.exists() => {
                return Err(fail(format!(
                    "hostPath type check failed: {} does not exist",
                    host.path
                )));
            }
            _ => {}
        }
        return Ok(host_path);
    }
    if volume.empty_dir.is_some() {
        std::fs::create_dir_all(&path).map_err(|e| io_error(name, "cannot create", e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| io_error(name, "cannot set the mode of", e))?;
        return Ok(path);
    }
    if let Some(source) = &volume.config_map {
        let files = config_map_files(
            name,
            sources,
            &source.name,
            source.items.as_ref(),
            source.optional.unwrap_or(false),
        )?
        .unwrap_or_default();
        write_files(
            name,
            &path,
            &files,
            source.default_mode.unwrap_or(0o644) as u32,
        )?;
        return Ok(path);
    }
    if let Some(source) = &volume.secret {
        let secret = source.secret_name.clone().unwrap_or_default();
        let files = secret_files(
            name,
            sources,
            &secret,
            source.items.as_ref(),
            source.optional.unwrap_or(false),
        )?
        .unwrap_or_default();
        write_files(
            name,
            &path,
            &files,
            source.default_mode.unwrap_or(0o644) as u32,
        )?;
        return Ok(path);
    }
    if let Some(source) = &volume.downward_api {
        let mut files = BTreeMap::new();
        for item in source.items.iter().flatten() {
            if let Some(field) = &item.field_ref {
                let pod_ip = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.clone())
                    .unwrap_or_default();
                let value = super::spec::field_value(pod, &field.field_path, host_ip, &pod_ip)
                    .unwrap_or_default();
                files.insert(item.path.clone(), value.into_bytes());
            }
        }
        write_files(
            name,
            &path,
            &files,
            source.default_mode.unwrap_or(0o644) as u32,
        )?;
        return Ok(path);
    }
    if let Some(projected) = &volume.projected {
        let mut files = BTreeMap::new();
        for projection in projected.sources.iter().flatten() {
            if let Some(source) = &projection.config_map {
                files.extend(
                    config_map_files(
                        name,
                        sources,
                        &source.name,
                        source.items.as_ref(),
                        source.optional.unwrap_or(false),
                    )?
                    .unwrap_or_default(),
                );
            }
            if let Some(source) = &projection.secret {
                files.extend(
                    secret_files(
                        name,
                        sources,
                        &source.name,
                        source.items.as_ref(),
                        source.optional.unwrap_or(false),
                    )?
                    .unwrap_or_default(),
                );
            }
            if let Some(source) = &projection.downward_api {
                for item in source.items.iter().flatten() {
                    if let Some(field) = &item.field_ref {
                        let value = super::spec::field_value(pod, &field.field_path, host_ip, "")
                            .unwrap_or_default();
                        files.insert(item.path.clone(), value.into_bytes());
                    }
                }
            }
            // Service account tokens need the TokenRequest API, which
            // comes with the API's authorization (the security issue); the
            // projection's other sources are written without them.
        }
        write_files(
            name,
            &path,
            &files,
            projected.default_mode.unwrap_or(0o644) as u32,
        )?;
        return Ok(path);
    }
    Err(MountError {
        volume: name.to_string(),
        message: "this volume type is not supported by shoal's node agent (supported: emptyDir, hostPath, configMap, secret, downwardAPI, projected)".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMapVolumeSource, EmptyDirVolumeSource};

    #[test]
    fn config_maps_become_files_and_missing_ones_fail() {
        let dir = tempfile::tempdir().unwrap();
        let pod = Pod::default();
        let volume = Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: "settings".into(),
                items: Some(vec![KeyToPath {
                    key: "a".into(),
                    path: "sub/a.txt".into(),
                    mode: None,
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let error = prepare(&volume, &pod, dir.path(), &Sources::default(), "").unwrap_err();
        assert_eq!(
            error.to_string(),
            "MountVolume.SetUp failed for volume \"config\" : configmap \"settings\" not found"
        );
        let mut sources = Sources::default();
        sources.config_maps.insert(
            "settings".into(),
            Some(ConfigMap {
                data: Some(BTreeMap::from([
                    ("a".into(), "alpha".into()),
                    ("b".into(), "beta".into()),
                ])),
                ..Default::default()
            }),
        );
        let path = prepare(&volume, &pod, dir.path(), &sources, "").unwrap();
        assert_eq!(
            std::fs::read_to_string(path.join("sub/a.txt")).unwrap(),
            "alpha"
        );
        assert!(!path.join("b").exists());

        let empty = Volume {
            name: "scratch".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        };
        assert!(
            prepare(&empty, &pod, dir.path(), &sources, "")
                .unwrap()
                .is_dir()
        );
    }
}

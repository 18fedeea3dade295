//! From a pod's container spec and its image's config to what the runtime
//! starts: the argv (Kubernetes' command/args over the image's Entrypoint
//! and Cmd, with `$(VAR)` references expanded), the environment (values,
//! field references, ConfigMap and Secret keys), user, capabilities, the
//! seccomp profile and resource limits.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVarSource, Pod, SeccompProfile, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use runtime::pod::{ImageInfo, Resources, Seccomp, SeccompProfile as SeccompFileProfile};

/// Objects a container's environment refers to, fetched once per start.
#[derive(Default)]
pub struct Referenced {
    pub config_maps: BTreeMap<String, Option<ConfigMap>>,
    pub secrets: BTreeMap<String, Option<Secret>>,
}

/// Why a container cannot be configured (kubelet's
/// `CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The names of the ConfigMaps and Secrets `container`'s environment uses.
pub fn env_references(container: &Container) -> (Vec<String>, Vec<String>) {
    let mut config_maps = Vec::new();
    let mut secrets = Vec::new();
    for var in container.env.iter().flatten() {
        if let Some(source) = &var.value_from {
            if let Some(key) = &source.config_map_key_ref {
                config_maps.push(key.name.clone());
            }
            if let Some(key) = &source.secret_key_ref {
                secrets.push(key.name.clone());
            }
        }
    }
    for source in container.env_from.iter().flatten() {
        if let Some(reference) = &source.config_map_ref {
            config_maps.push(reference.name.clone());
        }
        if let Some(reference) = &source.secret_ref {
            secrets.push(reference.name.clone());
        }
    }
    config_maps.sort();
    config_maps.dedup();
    secrets.sort();
    secrets.dedup();
    (config_maps, secrets)
}

/// The value of a `fieldRef` path for `pod` (the downward API).
pub fn field_value(pod: &Pod, path: &str, host_ip: &str, pod_ip: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let from_map = |map: &Option<BTreeMap<String, String>>, key: &str| {
        map.as_ref()
            .and_then(|map| map.get(key).cloned())
            .or(Some(String::new()))
    };
    let map_text = |map: &Option<BTreeMap<String, String>>| {
        map.iter()
            .flatten()
            .map(|(key, value)| format!("{key}={value:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if let Some(key) = path
        .strip_prefix("metadata.labels['")
        .and_then(|rest| rest.strip_suffix("']"))
    {
        return from_map(&meta.labels, key);
    }
    if let Some(key) = path
        .strip_prefix("metadata.annotations['")
        .and_then(|rest| rest.strip_suffix("']"))
    {
        return from_map(&meta.annotations, key);
    }
    Some(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => map_text(&meta.labels),
        "metadata.annotations" => map_text(&meta.annotations),
        "spec.nodeName" => spec.and_then(|spec| spec.node_name.clone())?,
        "spec.serviceAccountName" => spec
            .and_then(|spec| spec.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        _ => return None,
    })
}

/// A quantity as a number of `unit`s, rounded up (as resourceFieldRef
/// does with its divisor).
fn quantity_in(quantity: &Quantity, unit: f64) -> Option<String> {
    let value = parse_quantity(&quantity.0)?;
    Some(((value / unit).ceil() as i64).to_string())
}

/// A Kubernetes quantity (`100m`, `1.5`, `64Mi`, `1G`, `2e3`) as a number.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        _ => return None,
    };
    Some(number * factor)
}

fn resource_value(container: &Container, resource: &str, divisor: Option<&Quantity>) -> String {
    let resources = container.resources.as_ref();
    let (kind, name) = resource.split_once('.').unwrap_or(("limits", resource));
    let quantity = match kind {
        "requests" => resources
            .and_then(|r| r.requests.as_ref())
            .and_then(|m| m.get(name)),
        _ => resources
            .and_then(|r| r.limits.as_ref())
            .and_then(|m| m.get(name)),
    };
    let unit = divisor
        .and_then(|divisor| parse_quantity(&divisor.0))
        .filter(|unit| *unit > 0.0)
        .unwrap_or(1.0);
    match quantity {
        Some(quantity) => quantity_in(quantity, unit).unwrap_or_default(),
        // Without a limit, the node's allocatable stands in; without a
        // request, zero.
        None if kind == "requests" => "0".to_string(),
        None => String::new(),
    }
}

fn value_from(
    source: &EnvVarSource,
    pod: &Pod,
    container: &Container,
    referenced: &Referenced,
    ips: (&str, &str),
) -> Result<Option<String>, ConfigError> {
    if let Some(field) = &source.field_ref {
        return field_value(pod, &field.field_path, ips.0, ips.1)
            .map(Some)
            .ok_or_else(|| {
                ConfigError(format!("unsupported fieldRef path {:?}", field.field_path))
            });
    }
    if let Some(resource) = &source.resource_field_ref {
        return Ok(Some(resource_value(
            container,
            &resource.resource,
            resource.divisor.as_ref(),
        )));
    }
    if let Some(key) = &source.config_map_key_ref {
        let optional = key.optional.unwrap_or(false);
        let Some(Some(config_map)) = referenced.config_maps.get(&key.name) else {
            return if optional {
                Ok(None)
            } else {
                Err(ConfigError(format!("configmap {:?} not found", key.name)))
            };
        };
        return match config_map.data.as_ref().and_then(|data| data.get(&key.key)) {
            Some(value) => Ok(Some(value.clone())),
            None if optional => Ok(None),
            None => Err(ConfigError(format!(
                "couldn't find key {} in ConfigMap {}",
                key.key, key.name
            ))),
        };
    }
    if let Some(key) = &source.secret_key_ref {
        let optional = key.optional.unwrap_or(false);
        let Some(Some(secret)) = referenced.secrets.get(&key.name) else {
            return if optional {
                Ok(None)
            } else {
                Err(ConfigError(format!("secret {:?} not found", key.name)))
            };
        };
        return match secret.data.as_ref().and_then(|data| data.get(&key.key)) {
            Some(value) => Ok(Some(String::from_utf8_lossy(&value.0).into_owned())),
            None if optional => Ok(None),
            None => Err(ConfigError(format!(
                "couldn't find key {} in Secret {}",
                key.key, key.name
            ))),
        };
    }
    Ok(None)
}

/// The container's environment, in order: `envFrom` sources, then `env`
/// (a later name wins), `$(VAR)` in values expanded against what came
/// before.
pub fn environment(
    pod: &Pod,
    container: &Container,
    referenced: &Referenced,
    host_ip: &str,
    pod_ip: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
        if let Some(existing) = env.iter_mut().find(|(key, _)| *key == name) {
            existing.1 = value;
        } else {
            env.push((name, value));
        }
    };
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        if let Some(reference) = &source.config_map_ref {
            match referenced.config_maps.get(&reference.name) {
                Some(Some(config_map)) => {
                    for (key, value) in config_map.data.iter().flatten() {
                        set(&mut env, format!("{prefix}{key}"), value.clone());
                    }
                }
                _ if reference.optional.unwrap_or(false) => {}
                _ => {
                    return Err(ConfigError(format!(
                        "configmap {:?} not found",
                        reference.name
                    )));
                }
            }
        }
        if let Some(reference) = &source.secret_ref {
            match referenced.secrets.get(&reference.name) {
                Some(Some(secret)) => {
                    for (key, value) in secret.data.iter().flatten() {
                        set(
                            &mut env,
                            format!("{prefix}{key}"),
                            String::from_utf8_lossy(&value.0).into_owned(),
                        );
                    }
                }
                _ if reference.optional.unwrap_or(false) => {}
                _ => {
                    return Err(ConfigError(format!(
                        "secret {:?} not found",
                        reference.name
                    )));
                }
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(source)) => {
                match value_from(source, pod, container, referenced, (host_ip, pod_ip))? {
                    Some(value) => value,
                    None => continue,
                }
            }
            (Some(value), None) => expand(value, &env),
            (None, None) => String::new(),
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

/// Expands `$(NAME)` references to `env`'s values; `$$` is a literal `$`;
/// a reference to an unknown name stays as written (Kubernetes' rules).
pub fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(position) = rest.find('$') {
        out.push_str(&rest[..position]);
        let after = &rest[position + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(key, _)| key == name) {
                Some((_, value)) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The argv: `command` replaces the image's Entrypoint, `args` its Cmd
/// (and a `command` without `args` drops the Cmd).
pub fn argv(container: &Container, image: &ImageInfo, env: &[(String, String)]) -> Vec<String> {
    let expand_all = |items: &Vec<String>| {
        items
            .iter()
            .map(|item| expand(item, env))
            .collect::<Vec<_>>()
    };
    let command = container.command.as_ref().filter(|c| !c.is_empty());
    let args = container.args.as_ref().filter(|a| !a.is_empty());
    match (command, args) {
        (Some(command), Some(args)) => [expand_all(command), expand_all(args)].concat(),
        (Some(command), None) => expand_all(command),
        (None, Some(args)) => [image.entrypoint.clone(), expand_all(args)].concat(),
        (None, None) => [image.entrypoint.clone(), image.cmd.clone()].concat(),
    }
}

/// The seccomp profile of a container: its own `securityContext`'s, else
/// the pod's, else `RuntimeDefault` (shoal's default; the kubelet's is
/// `Unconfined` unless started with `--seccomp-default`). A `Localhost`
/// profile is a file under `DATA_DIR/seccomp/`, the kubelet's seccomp
/// directory.
pub fn seccomp(
    container: Option<&SeccompProfile>,
    pod: Option<&SeccompProfile>,
    data_dir: &Path,
) -> Result<Seccomp, ConfigError> {
    let Some(profile) = container.or(pod) else {
        return Ok(Seccomp::RuntimeDefault);
    };
    match profile.type_.as_str() {
        "RuntimeDefault" => Ok(Seccomp::RuntimeDefault),
        "Unconfined" => Ok(Seccomp::Unconfined),
        "Localhost" => {
            let name = profile.localhost_profile.as_deref().unwrap_or_default();
            if name.is_empty() || name.starts_with('/') || name.split('/').any(|part| part == "..")
            {
                return Err(ConfigError(format!(
                    "invalid seccompProfile.localhostProfile {name:?}: a path relative to the node's seccomp directory"
                )));
            }
            let path = data_dir.join("seccomp").join(name);
            let profile =
                SeccompFileProfile::read(&path).map_err(|error| ConfigError(error.to_string()))?;
            Ok(Seccomp::Profile(profile))
        }
        other => Err(ConfigError(format!(
            "invalid seccompProfile.type {other:?}: RuntimeDefault, Unconfined or Localhost"
        ))),
    }
}

/// Requests and limits as the runtime's cgroup settings.
pub fn resources(container: &Container) -> Resources {
    let get = |map: Option<&BTreeMap<String, Quantity>>, name: &str| {
        map.and_then(|map| map.get(name))
            .and_then(|quantity| parse_quantity(&quantity.0))
    };
    let resources = container.resources.as_ref();
    let requests = resources.and_then(|r| r.requests.as_ref());
    let limits = resources.and_then(|r| r.limits.as_ref());
    Resources {
        // A limit without a request requests the limit (API defaulting).
        cpu_request_millis: get(requests, "cpu")
            .or_else(|| get(limits, "cpu"))
            .map(|cpus| (cpus * 1000.0).ceil() as u64),
        cpu_limit_millis: get(limits, "cpu").map(|cpus| (cpus * 1000.0).ceil() as u64),
        memory_limit_bytes: get(limits, "memory").map(|bytes| bytes as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seccomp_profiles_container_over_pod_runtime_default_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let profile = |type_: &str, localhost: Option<&str>| SeccompProfile {
            type_: type_.to_string(),
            localhost_profile: localhost.map(str::to_string),
        };
        assert_eq!(
            seccomp(None, None, dir.path()).unwrap(),
            Seccomp::RuntimeDefault
        );
        let unconfined = profile("Unconfined", None);
        let default = profile("RuntimeDefault", None);
        assert_eq!(
            seccomp(None, Some(&unconfined), dir.path()).unwrap(),
            Seccomp::Unconfined
        );
        assert_eq!(
            seccomp(Some(&default), Some(&unconfined), dir.path()).unwrap(),
            Seccomp::RuntimeDefault
        );
        std::fs::create_dir_all(dir.path().join("seccomp/profiles")).unwrap();
        std::fs::write(
            dir.path().join("seccomp/profiles/audit.json"),
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        let local = profile("Localhost", Some("profiles/audit.json"));
        assert!(matches!(
            seccomp(Some(&local), None, dir.path()).unwrap(),
            Seccomp::Profile(_)
        ));
        for bad in [
            profile("Localhost", Some("../etc/profile.json")),
            profile("Localhost", Some("/etc/profile.json")),
            profile("Localhost", None),
            profile("Localhost", Some("missing.json")),
            profile("Sometimes", None),
        ] {
            assert!(seccomp(Some(&bad), None, dir.path()).is_err(), "{bad:?}");
        }
    }
    use k8s_openapi::api::core::v1::{EnvVar, ObjectFieldSelector, PodSpec};

    fn image() -> ImageInfo {
        ImageInfo {
            id: "sha256:x".into(),
            local_name: "busybox".into(),
            entrypoint: vec!["/entry".into()],
            cmd: vec!["default".into()],
            env: vec![],
            working_dir: None,
            user: None,
            stop_signal: None,
        }
    }

    #[test]
    fn command_and_args_follow_kubernetes_rules() {
        let env = vec![("WHO".to_string(), "world".to_string())];
        let mut container = Container::default();
        assert_eq!(argv(&container, &image(), &env), ["/entry", "default"]);
        container.args = Some(vec!["hello $(WHO)".into(), "$$(WHO)".into()]);
        assert_eq!(
            argv(&container, &image(), &env),
            ["/entry", "hello world", "$(WHO)"]
        );
        container.command = Some(vec!["sh".into()]);
        container.args = None;
        assert_eq!(argv(&container, &image(), &env), ["sh"]);
        assert_eq!(expand("$(NOPE) $ x$", &env), "$(NOPE) $ x$");
    }

    #[test]
    fn environment_resolves_fields_and_references() {
        let pod = Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("web".into()),
                namespace: Some("prod".into()),
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-1".into()),
                ..Default::default()
            }),
            status: None,
        };
        let field = |path: &str| EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..Default::default()
        };
        let container = Container {
            env: Some(vec![
                EnvVar {
                    name: "POD".into(),
                    value_from: Some(field("metadata.name")),
                    value: None,
                },
                EnvVar {
                    name: "APP".into(),
                    value_from: Some(field("metadata.labels['app']")),
                    value: None,
                },
                EnvVar {
                    name: "NODE".into(),
                    value_from: Some(field("spec.nodeName")),
                    value: None,
                },
                EnvVar {
                    name: "IP".into(),
                    value_from: Some(field("status.podIP")),
                    value: None,
                },
                EnvVar {
                    name: "GREETING".into(),
                    value: Some("pod $(POD) on $(NODE)".into()),
                    value_from: None,
                },
            ]),
            ..Default::default()
        };
        let env = environment(
            &pod,
            &container,
            &Referenced::default(),
            "10.0.0.1",
            "10.42.0.5",
        )
        .unwrap();
        let get = |name: &str| env.iter().find(|(k, _)| k == name).unwrap().1.clone();
        assert_eq!(get("POD"), "web");
        assert_eq!(get("APP"), "web");
        assert_eq!(get("NODE"), "node-1");
        assert_eq!(get("IP"), "10.42.0.5");
        assert_eq!(get("GREETING"), "pod web on node-1");
    }

    #[test]
    fn quantities_parse() {
        assert_eq!(parse_quantity("100m"), Some(0.1));
        assert_eq!(parse_quantity("64Mi"), Some(64.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        assert_eq!(parse_quantity("x"), None);
    }
}

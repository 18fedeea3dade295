//! Images for pods: found in the node's content store or pulled through the
//! runtime's registry client, as the pod's pull policy says, then checked
//! against the trust store as `shoal run` checks them.

use serde::Deserialize;

use crate::image::fetch::{self, FetchOptions};
use crate::image::registry::RemoteRef;
use crate::image::store::Store;
use crate::pod::{PodError, PodRuntime};

/// Kubernetes' `imagePullPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// A registry login, as a docker config's `auths` entry gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
}

impl RegistryAuth {
    /// The login for `registry` (`HOST[:PORT]`) in a docker config JSON
    /// (`.dockerconfigjson` or `.dockercfg`): `username` and `password`, or
    /// `auth` (base64 of `user:password`). Keys may be URLs
    /// (`https://index.docker.io/v1/`).
    pub fn from_docker_config(
        json: &[u8],
        registry: &str,
    ) -> Result<Option<RegistryAuth>, PodError> {
        #[derive(Deserialize)]
        struct Entry {
            username: Option<String>,
            password: Option<String>,
            auth: Option<String>,
        }
        #[derive(Deserialize)]
        struct Config {
            auths: Option<std::collections::BTreeMap<String, Entry>>,
        }
        let bad = |message: String| PodError::invalid("docker config", message);
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|error| bad(error.to_string()))?;
        // `.dockercfg` is the `auths` map itself.
        let auths = if value.get("auths").is_some() {
            serde_json::from_value::<Config>(value)
                .map_err(|error| bad(error.to_string()))?
                .auths
                .unwrap_or_default()
        } else {
            serde_json::from_value(value).map_err(|error| bad(error.to_string()))?
        };
        let host_of = |key: &str| {
            let without_scheme = key
                .strip_prefix("https://")
                .or_else(|| key.strip_prefix("http://"))
                .unwrap_or(key);
            without_scheme
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string()
        };
        let wanted = normalize_registry(registry);
        let Some(entry) = auths
            .iter()
            .find(|(key, _)| normalize_registry(&host_of(key)) == wanted)
            .map(|(_, entry)| entry)
        else {
            return Ok(None);
        };
        if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
            return Ok(Some(RegistryAuth {
                username: username.clone(),
                password: password.clone(),
            }));
        }
        let Some(auth) = &entry.auth else {
            return Ok(None);
        };
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad(format!("the auth of {registry} is not base64")))?;
        let text = String::from_utf8(decoded)
            .map_err(|_| bad(format!("the auth of {registry} is not text")))?;
        let (username, password) = text
            .split_once(':')
            .ok_or_else(|| bad(format!("the auth of {registry} is not USER:PASSWORD")))?;
        Ok(Some(RegistryAuth {
            username: username.to_string(),
            password: password.to_string(),
        }))
    }
}

/// Docker Hub answers to several names.
fn normalize_registry(host: &str) -> String {
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

/// A resolved image: its id and the config the agent needs to work out the
/// command as Kubernetes does (`command` replaces Entrypoint, `args` Cmd).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// The manifest digest, `sha256:…`: what `ContainerSpec::image` takes.
    pub id: String,
    /// The name it has in the node's store (`busybox:latest`).
    pub local_name: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub stop_signal: Option<String>,
}

impl PodRuntime {
    /// Finds `name` in the node's store or pulls it, per `policy`; checks
    /// its signature unless `insecure_skip_signature`.
    pub fn ensure_image(
        &self,
        name: &str,
        policy: PullPolicy,
        credentials: Option<&RegistryAuth>,
        insecure_skip_signature: bool,
    ) -> Result<ImageInfo, PodError> {
        let store = Store::open(&self.inner.data_dir)?;
        // A name the store has as given (an imported image, a digest)
        // needs no registry; otherwise the registry reference's local name.
        let remote = RemoteRef::parse(name);
        let local_name = match (store.resolve(name), &remote) {
            (Ok(_), _) => name.to_string(),
            (Err(_), Ok(remote)) => remote
                .local_name()
                .map(|reference| reference.to_string())
                .unwrap_or_else(|_| name.to_string()),
            (Err(_), Err(_)) => name.to_string(),
        };
        let present = store.resolve(&local_name).ok();
        let digest = match (policy, present) {
            (PullPolicy::Never, None) => {
                return Err(PodError::ImageNotPresent {
                    image: name.to_string(),
                });
            }
            (PullPolicy::Never | PullPolicy::IfNotPresent, Some(digest)) => digest,
            (PullPolicy::Always, _) | (PullPolicy::IfNotPresent, None) => {
                let remote = remote.map_err(|error| PodError::ImagePull {
                    image: name.to_string(),
                    message: format!("{error:#}"),
                })?;
                let options = FetchOptions {
                    insecure_registry: self
                        .inner
                        .options
                        .insecure_registries
                        .contains(&remote.registry),
                    name: None,
                    progress: false,
                    credentials: credentials
                        .map(|auth| (auth.username.clone(), auth.password.clone())),
                };
                fetch::fetch(&store, name, &options)
                    .map_err(|error| PodError::ImagePull {
                        image: name.to_string(),
                        message: format!("{error:#}"),
                    })?
                    .1
            }
        };
        let image = store
            .load(&digest)
            .map_err(|error| PodError::ImageCorrupt {
                image: name.to_string(),
                message: format!("{error:#}"),
            })?;
        if !insecure_skip_signature {
            crate::cli::verify_trust(&store, &local_name, &image).map_err(|error| {
                PodError::SignatureCheck {
                    image: name.to_string(),
                    message: format!("{error:#}"),
                }
            })?;
        }
        let config = image.config.config;
        Ok(ImageInfo {
            id: digest.to_string(),
            local_name,
            entrypoint: config.entrypoint.unwrap_or_default(),
            cmd: config.cmd.unwrap_or_default(),
            env: config.env.unwrap_or_default(),
            working_dir: config.working_dir.filter(|dir| !dir.is_empty()),
            user: config.user.filter(|user| !user.is_empty()),
            stop_signal: config.stop_signal,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_logins_are_found_by_registry() {
        // "user:s3cret" in base64.
        let config = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpzM2NyZXQ="},
            "localhost:5000": {"username": "me", "password": "pw"}
        }}"#;
        assert_eq!(
            RegistryAuth::from_docker_config(config, "docker.io").unwrap(),
            Some(RegistryAuth {
                username: "user".into(),
                password: "s3cret".into()
            })
        );
        assert_eq!(
            RegistryAuth::from_docker_config(config, "localhost:5000")
                .unwrap()
                .unwrap()
                .username,
            "me"
        );
        assert_eq!(
            RegistryAuth::from_docker_config(config, "quay.io").unwrap(),
            None
        );
        let legacy = br#"{"quay.io": {"auth": "dXNlcjpzM2NyZXQ="}}"#;
        assert!(
            RegistryAuth::from_docker_config(legacy, "quay.io")
                .unwrap()
                .is_some()
        );
        assert!(RegistryAuth::from_docker_config(b"[", "quay.io").is_err());
    }
}

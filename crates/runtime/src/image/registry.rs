//! A client for OCI distribution registries (the Docker Registry HTTP API
//! v2): image references as `docker pull` takes them, manifests and blobs
//! over https (plain http only when the user asks for it), and the anonymous
//! bearer-token handshake public registries require.

use std::cell::RefCell;
use std::fmt;
use std::io::Read;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::digest::Digest;
use crate::image::oci;
use crate::image::reference::{DEFAULT_TAG, ImageRef};

/// Docker Hub, where names without a registry host come from.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's registry API.
const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";

/// What a manifest request accepts, best first.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// An image in a registry: `[HOST/]REPOSITORY[:TAG][@sha256:DIGEST]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteRef {
    /// `host[:port]` as written, or [`DOCKER_HUB`].
    pub registry: String,
    /// The repository path in the registry (`library/busybox` on Docker Hub).
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl RemoteRef {
    /// Parses a reference as `docker pull` takes it. The first path
    /// component is a registry host when it contains a `.` or a `:` or is
    /// `localhost`; otherwise the image is on Docker Hub (`busybox` is
    /// `docker.io/library/busybox`). The tag defaults to `latest` unless a
    /// digest is given.
    pub fn parse(text: &str) -> anyhow::Result<RemoteRef> {
        if text.contains("://") {
            bail!(
                "invalid image reference {text:?}: write HOST/NAME[:TAG] without a scheme (https is used; --insecure-registry for plain http)"
            );
        }
        let (name_and_tag, digest) = match text.split_once('@') {
            Some((name_and_tag, digest)) => {
                let digest = digest.parse::<Digest>().with_context(|| {
                    format!("invalid image reference {text:?}: bad digest after '@'")
                })?;
                (name_and_tag, Some(digest))
            }
            None => (text, None),
        };
        let last_slash = name_and_tag.rfind('/').map_or(0, |index| index + 1);
        let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
            Some(colon) => (
                &name_and_tag[..last_slash + colon],
                Some(&name_and_tag[last_slash + colon + 1..]),
            ),
            None => (name_and_tag, None),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let valid_host = !registry.is_empty()
            && registry.bytes().all(|byte| {
                byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b':' | b'[' | b']')
            });
        if !valid_host {
            bail!("invalid image reference {text:?}: bad registry host {registry:?}");
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        // The repository and tag follow the rules of local image names.
        ImageRef::parse(&format!("{repository}:{}", tag.unwrap_or(DEFAULT_TAG)))
            .with_context(|| format!("invalid image reference {text:?}"))?;
        Ok(RemoteRef {
            registry,
            repository,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// The manifest reference to ask the registry for: the digest when one
    /// was given (it pins the content), else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// The name the fetched image gets in the local store: the registry host
    /// and repository (Docker Hub's shortened as docker shows them, as
    /// `image import` does) with the tag; for a digest without a tag, the
    /// tag `sha256-<hex>`.
    pub fn local_name(&self) -> anyhow::Result<ImageRef> {
        let name = if self.registry == DOCKER_HUB {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            format!("{}/{}", self.registry, self.repository)
        };
        let tag = match (&self.tag, &self.digest) {
            (Some(tag), _) => tag.clone(),
            (None, Some(digest)) => format!("sha256-{}", digest.hex()),
            (None, None) => DEFAULT_TAG.to_string(),
        };
        ImageRef::parse(&format!("{name}:{tag}")).map_err(Into::into)
    }

    fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API_HOST
        } else {
            &self.registry
        }
    }
}

impl fmt::Display for RemoteRef {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(formatter, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(formatter, "@{digest}")?;
        }
        if self.tag.is_none() && self.digest.is_none() {
            write!(formatter, ":{DEFAULT_TAG}")?;
        }
        Ok(())
    }
}

/// A manifest or index as the registry sent it, verified against its digest.
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub media_type: String,
}

/// A `WWW-Authenticate` challenge: the scheme and its parameters.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// Parses `Bearer realm="https://auth.example/token",service="x",scope="a,b"`
    /// (RFC 7235: parameters are tokens or quoted strings, which may hold
    /// commas and backslash escapes).
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, mut rest) = match header.split_once(char::is_whitespace) {
            Some((scheme, rest)) => (scheme, rest.trim_start()),
            None => (header, ""),
        };
        if scheme.is_empty() {
            return None;
        }
        let mut params = Vec::new();
        while !rest.is_empty() {
            let (key, after_key) = rest.split_once('=')?;
            let key = key.trim().to_ascii_lowercase();
            let after_key = after_key.trim_start();
            let (value, after_value) = if let Some(quoted) = after_key.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut end = None;
                while let Some((index, c)) = chars.next() {
                    match c {
                        '\\' => value.push(chars.next()?.1),
                        '"' => {
                            end = Some(index + 1);
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, &quoted[end?..])
            } else {
                let end = after_key.find(',').unwrap_or(after_key.len());
                (after_key[..end].trim().to_string(), &after_key[end..])
            };
            params.push((key, value));
            rest = after_value.trim_start();
            rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
        }
        Some(Challenge {
            scheme: scheme.to_string(),
            params,
        })
    }

    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

/// A client for one repository of one registry.
pub struct Client {
    agent: ureq::Agent,
    base_url: String,
    host: String,
    repository: String,
    insecure: bool,
    /// The `Authorization` header, once the registry has asked for one
    /// (`Bearer TOKEN`, or `Basic …` for a registry that takes a login).
    token: RefCell<Option<String>>,
    /// A login (user name and password) for registries that ask for one.
    credentials: Option<(String, String)>,
}

impl Client {
    /// A client for `remote`'s repository, over https, or over plain http
    /// when `insecure` (the user's `--insecure-registry`).
    pub fn new(remote: &RemoteRef, insecure: bool) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            // Statuses are read here: a 401 carries the auth challenge.
            .http_status_as_error(false)
            // Without --insecure-registry, a redirect to http is refused too.
            .https_only(!insecure)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("shoal/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let scheme = if insecure { "http" } else { "https" };
        let host = remote.api_host().to_string();
        Client {
            agent,
            base_url: format!("{scheme}://{host}"),
            host: remote.registry.clone(),
            repository: remote.repository.clone(),
            insecure,
            token: RefCell::new(None),
            credentials: None,
        }
    }

    /// Logs in with `username` and `password` when the registry asks: HTTP
    /// Basic, or a bearer token got from the realm with them.
    pub fn with_credentials(mut self, username: &str, password: &str) -> Client {
        self.credentials = Some((username.to_string(), password.to_string()));
        self
    }

    fn basic_authorization(&self) -> Option<String> {
        use base64::Engine as _;
        let (username, password) = self.credentials.as_ref()?;
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
        ))
    }

    /// Fetches a manifest or index by tag or digest, verifying its digest:
    /// against the one asked for, or the one the registry reports in
    /// `Docker-Content-Digest`.
    pub fn manifest(&self, reference: &str) -> anyhow::Result<FetchedManifest> {
        let path = format!("/v2/{}/manifests/{reference}", self.repository);
        let mut response = self.get(&path, Some(MANIFEST_ACCEPT))?;
        let status = response.status().as_u16();
        if status == 404 {
            bail!(
                "image {}:{reference} not found in registry {}",
                self.repository,
                self.host
            );
        }
        if status != 200 {
            return Err(self.status_error(response, &path));
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header("content-type").unwrap_or_default();
        let reported_digest = header("docker-content-digest");
        let bytes = response
            .body_mut()
            .with_config()
            .limit(crate::image::import::MAX_JSON_BYTES)
            .read_to_vec()
            .map_err(|error| self.transport_error(error))
            .with_context(|| format!("cannot read manifest {reference}"))?;
        let digest = Digest::of_bytes(&bytes);
        let expected = match reference.parse::<Digest>() {
            Ok(asked) => Some(asked),
            Err(_) => reported_digest.and_then(|text| text.parse::<Digest>().ok()),
        };
        if let Some(expected) = expected
            && expected != digest
        {
            bail!(
                "manifest {expected} from registry {} is corrupt: its content hashes to {digest}",
                self.host
            );
        }
        let media_type = manifest_media_type(&bytes, &content_type)?;
        Ok(FetchedManifest {
            bytes,
            digest,
            media_type,
        })
    }

    /// Opens a blob for streaming. The caller verifies its digest (the
    /// content store does, as it writes).
    pub fn blob(&self, digest: &Digest) -> anyhow::Result<Box<dyn Read>> {
        let path = format!("/v2/{}/blobs/{digest}", self.repository);
        let response = self.get(&path, None)?;
        match response.status().as_u16() {
            200 => Ok(Box::new(response.into_body().into_reader())),
            404 => bail!(
                "blob {digest} of {} not found in registry {}",
                self.repository,
                self.host
            ),
            _ => Err(self.status_error(response, &path)),
        }
    }

    /// A GET, answering a bearer challenge once with an anonymous token.
    fn get(
        &self,
        path: &str,
        accept: Option<&str>,
    ) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let response = self.send(path, accept)?;
        // A 401 asks for a token, or a fresh one when it has expired.
        if response.status().as_u16() != 401 {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|value| value.to_str().ok())
            .and_then(Challenge::parse);
        let basic = self.basic_authorization();
        let authorization = match (challenge, &basic) {
            (Some(challenge), _) if challenge.scheme.eq_ignore_ascii_case("bearer") => {
                format!("Bearer {}", self.anonymous_token(&challenge)?)
            }
            (Some(challenge), Some(basic)) if challenge.scheme.eq_ignore_ascii_case("basic") => {
                basic.clone()
            }
            _ => bail!(
                "registry {} requires a login, which `shoal image fetch` does not support yet",
                self.host
            ),
        };
        *self.token.borrow_mut() = Some(authorization);
        let response = self.send(path, accept)?;
        if response.status().as_u16() == 401 {
            if basic.is_some() {
                bail!(
                    "registry {} refused the login for {}: check the user name and password",
                    self.host,
                    self.repository
                );
            }
            bail!(
                "registry {} refused anonymous access to {}: the image is private or does not exist",
                self.host,
                self.repository
            );
        }
        Ok(response)
    }

    fn send(
        &self,
        path: &str,
        accept: Option<&str>,
    ) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let mut request = self.agent.get(format!("{}{path}", self.base_url));
        if let Some(accept) = accept {
            request = request.header("Accept", accept);
        }
        if let Some(authorization) = self.token.borrow().as_deref() {
            request = request.header("Authorization", authorization);
        }
        request.call().map_err(|error| self.transport_error(error))
    }

    /// Asks the challenge's realm for a token with no credentials, as
    /// `docker pull` does for public images.
    fn anonymous_token(&self, challenge: &Challenge) -> anyhow::Result<String> {
        let realm = challenge.param("realm").with_context(|| {
            format!(
                "registry {} sent a bearer challenge without a realm",
                self.host
            )
        })?;
        let default_scope = format!("repository:{}:pull", self.repository);
        let mut request = self
            .agent
            .get(realm)
            .query("scope", challenge.param("scope").unwrap_or(&default_scope));
        if let Some(service) = challenge.param("service") {
            request = request.query("service", service);
        }
        if let Some(basic) = self.basic_authorization() {
            request = request.header("Authorization", basic);
        }
        let mut response = request
            .call()
            .map_err(|error| self.transport_error(error))
            .with_context(|| format!("cannot get a token from {realm}"))?;
        if response.status().as_u16() != 200 {
            bail!(
                "the token service {realm} of registry {} answered {}",
                self.host,
                response.status()
            );
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let bytes = response
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|error| self.transport_error(error))?;
        let parsed: TokenResponse = serde_json::from_slice(&bytes)
            .with_context(|| format!("the token service {realm} sent no valid JSON"))?;
        parsed
            .token
            .or(parsed.access_token)
            .filter(|token| !token.is_empty())
            .with_context(|| format!("the token service {realm} sent no token"))
    }

    /// Turns a status the caller did not expect into one line, with the
    /// registry's own message when its error body has one.
    fn status_error(
        &self,
        mut response: ureq::http::Response<ureq::Body>,
        path: &str,
    ) -> anyhow::Error {
        let status = response.status();
        let message = response
            .body_mut()
            .with_config()
            .limit(64 << 10)
            .read_to_vec()
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .and_then(|body| {
                body["errors"][0]["message"]
                    .as_str()
                    .map(|message| format!(": {message}"))
            })
            .unwrap_or_default();
        anyhow::anyhow!(
            "registry {} answered {status} to GET {path}{message}",
            self.host
        )
    }

    /// Names what went wrong below HTTP in one line: the host that does not
    /// resolve, the connection refused, the TLS handshake with a plain-http
    /// server.
    fn transport_error(&self, error: ureq::Error) -> anyhow::Error {
        let host = &self.host;
        match error {
            ureq::Error::HostNotFound => {
                anyhow::anyhow!("cannot resolve registry host {host}")
            }
            ureq::Error::Io(io_error)
                if io_error.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                anyhow::anyhow!("cannot connect to registry {host}: connection refused")
            }
            // std's resolver reports getaddrinfo's failures with this text
            // and no specific kind.
            ureq::Error::Io(io_error)
                if io_error.to_string().contains("failed to lookup address") =>
            {
                anyhow::anyhow!("cannot resolve registry host {host}: {io_error}")
            }
            ureq::Error::ConnectionFailed => {
                anyhow::anyhow!("cannot connect to registry {host}")
            }
            ureq::Error::Timeout(what) => {
                anyhow::anyhow!("registry {host} did not answer in time ({what})")
            }
            ureq::Error::RequireHttpsOnly(url) => anyhow::anyhow!(
                "registry {host} sent shoal to plain http ({url}), which needs --insecure-registry"
            ),
            error @ (ureq::Error::Rustls(_) | ureq::Error::Tls(_)) if !self.insecure => {
                anyhow::anyhow!(
                    "cannot talk https to registry {host}: {error} (for a plain-http registry, pass --insecure-registry)"
                )
            }
            ureq::Error::Io(io_error) if !self.insecure && is_tls_error(&io_error) => {
                anyhow::anyhow!(
                    "cannot talk https to registry {host}: {io_error} (for a plain-http registry, pass --insecure-registry)"
                )
            }
            error => anyhow::anyhow!("registry {host}: {error}"),
        }
    }
}

/// Whether an I/O error came out of the TLS layer: rustls reports a peer
/// that does not speak TLS (a plain-http registry) as invalid data.
fn is_tls_error(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::InvalidData
}

/// The media type of a manifest: its own `mediaType` field, else the
/// response's `Content-Type`, else its shape (an index has `manifests`).
fn manifest_media_type(bytes: &[u8], content_type: &str) -> anyhow::Result<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        schema_version: Option<u32>,
        manifests: Option<serde_json::Value>,
        layers: Option<serde_json::Value>,
    }
    let probe: Probe =
        serde_json::from_slice(bytes).context("the registry sent a manifest that is not JSON")?;
    let content_type = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let media_type = match probe.media_type.filter(|media_type| !media_type.is_empty()) {
        Some(media_type) => media_type,
        None if !content_type.is_empty() && content_type != "application/json" => content_type,
        None if probe.manifests.is_some() => oci::MEDIA_TYPE_OCI_INDEX.to_string(),
        None if probe.layers.is_some() && probe.schema_version == Some(2) => {
            oci::MEDIA_TYPE_OCI_MANIFEST.to_string()
        }
        None => bail!("the registry sent a manifest of unknown type"),
    };
    if oci::is_manifest_media_type(&media_type) || oci::Index::is_index_media_type(&media_type) {
        Ok(media_type)
    } else if media_type.starts_with("application/vnd.docker.distribution.manifest.v1") {
        bail!(
            "unsupported media type {media_type:?}: docker's schema 1 manifests are obsolete; push the image again with a current tool"
        )
    } else {
        bail!("unsupported media type {media_type:?}: not a container image manifest")
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    use super::*;

    fn parse(text: &str) -> RemoteRef {
        RemoteRef::parse(text).unwrap()
    }

    #[test]
    fn registry_host_is_the_first_component_with_a_dot_a_colon_or_localhost() {
        let remote = parse("127.0.0.1:5000/busybox:1.0");
        assert_eq!(remote.registry, "127.0.0.1:5000");
        assert_eq!(remote.repository, "busybox");
        assert_eq!(remote.tag.as_deref(), Some("1.0"));
        assert_eq!(remote.manifest_reference(), "1.0");
        assert_eq!(
            remote.local_name().unwrap().to_string(),
            "127.0.0.1:5000/busybox:1.0"
        );

        let remote = parse("localhost/tools/busybox");
        assert_eq!(remote.registry, "localhost");
        assert_eq!(remote.repository, "tools/busybox");
        assert_eq!(remote.manifest_reference(), "latest");

        let remote = parse("quay.io/app");
        assert_eq!(
            (remote.registry.as_str(), remote.repository.as_str()),
            ("quay.io", "app")
        );

        // No host: Docker Hub, official images under library/.
        let remote = parse("busybox");
        assert_eq!(remote.registry, DOCKER_HUB);
        assert_eq!(remote.repository, "library/busybox");
        assert_eq!(remote.local_name().unwrap().to_string(), "busybox:latest");
        assert_eq!(remote.api_host(), "registry-1.docker.io");
        let remote = parse("umoci/busybox:1");
        assert_eq!(remote.repository, "umoci/busybox");
        assert_eq!(remote.local_name().unwrap().to_string(), "umoci/busybox:1");
    }

    #[test]
    fn digests_pin_the_manifest_and_name_the_image_when_there_is_no_tag() {
        let hex = "ab".repeat(32);
        let remote = parse(&format!("example.com/app@sha256:{hex}"));
        assert_eq!(remote.tag, None);
        assert_eq!(remote.manifest_reference(), format!("sha256:{hex}"));
        assert_eq!(
            remote.local_name().unwrap().to_string(),
            format!("example.com/app:sha256-{hex}")
        );
        let remote = parse(&format!("example.com/app:1.2@sha256:{hex}"));
        assert_eq!(remote.manifest_reference(), format!("sha256:{hex}"));
        assert_eq!(
            remote.local_name().unwrap().to_string(),
            "example.com/app:1.2"
        );
    }

    #[test]
    fn bad_references_are_refused() {
        for text in [
            "http://127.0.0.1:5000/busybox",
            "Busybox",
            "example.com/app@sha256:abc",
            "example.com/app@md5:abc",
            "example.com/App",
            "example.com/app:",
            "exa mple.com/app",
            "",
        ] {
            assert!(
                RemoteRef::parse(text).is_err(),
                "{text:?} should be refused"
            );
        }
    }

    #[test]
    fn bearer_challenges_parse_with_quoted_commas() {
        let challenge = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .unwrap();
        assert_eq!(challenge.scheme, "Bearer");
        assert_eq!(
            challenge.param("realm"),
            Some("https://auth.docker.io/token")
        );
        assert_eq!(challenge.param("service"), Some("registry.docker.io"));
        assert_eq!(
            challenge.param("scope"),
            Some("repository:library/busybox:pull,push")
        );
        let challenge = Challenge::parse(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(challenge.scheme, "Basic");
        assert_eq!(challenge.param("realm"), Some("Registry Realm"));
        let challenge = Challenge::parse(r#"Bearer realm=x, error="a\"b""#).unwrap();
        assert_eq!(challenge.param("realm"), Some("x"));
        assert_eq!(challenge.param("error"), Some("a\"b"));
        assert!(Challenge::parse(r#"Bearer realm="unterminated"#).is_none());
    }

    #[test]
    fn manifest_media_types_come_from_the_body_then_the_header_then_the_shape() {
        let docker = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{},"layers":[]}"#;
        assert_eq!(
            manifest_media_type(docker, "text/plain").unwrap(),
            oci::MEDIA_TYPE_DOCKER_MANIFEST
        );
        let bare = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        assert_eq!(
            manifest_media_type(bare, oci::MEDIA_TYPE_OCI_MANIFEST).unwrap(),
            oci::MEDIA_TYPE_OCI_MANIFEST
        );
        assert_eq!(
            manifest_media_type(bare, "application/json").unwrap(),
            oci::MEDIA_TYPE_OCI_MANIFEST
        );
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(
            manifest_media_type(index, "").unwrap(),
            oci::MEDIA_TYPE_OCI_INDEX
        );
        let schema1 = br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
        let error = manifest_media_type(
            schema1,
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
        )
        .unwrap_err();
        assert!(error.to_string().contains("schema 1"), "{error}");
        let artifact =
            br#"{"schemaVersion":2,"mediaType":"application/vnd.cncf.helm.chart.v1+json"}"#;
        let error = manifest_media_type(artifact, "").unwrap_err();
        assert!(
            error.to_string().contains("unsupported media type"),
            "{error}"
        );
    }

    /// A registry that wants a bearer token, as Docker Hub does: answers
    /// one request per connection, and records each request line with its
    /// Authorization header.
    fn token_registry(challenge: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let log = Arc::new(Mutex::new(Vec::new()));
        let thread_log = Arc::clone(&log);
        let realm = format!("http://{address}/token");
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                let mut authorization = String::new();
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line.trim().is_empty() {
                        break;
                    }
                    if let Some(value) = line
                        .strip_prefix("authorization: ")
                        .or_else(|| line.strip_prefix("Authorization: "))
                    {
                        authorization = value.trim().to_string();
                    }
                }
                let target = request_line.split(' ').nth(1).unwrap_or("").to_string();
                thread_log
                    .lock()
                    .unwrap()
                    .push(format!("{target} [{authorization}]"));
                let (status, headers, body) = if target.starts_with("/token?") {
                    ("200 OK", String::new(), r#"{"token":"t0k3n"}"#.to_string())
                } else if authorization != "Bearer t0k3n"
                    // user:pw, the one login this registry takes.
                    && authorization != "Basic dXNlcjpwdw=="
                {
                    let header = challenge.replace("REALM", &realm);
                    (
                        "401 Unauthorized",
                        format!("WWW-Authenticate: {header}\r\n"),
                        String::new(),
                    )
                } else {
                    (
                        "200 OK",
                        format!("Content-Type: {}\r\n", oci::MEDIA_TYPE_OCI_MANIFEST),
                        r#"{"schemaVersion":2,"config":{},"layers":[]}"#.to_string(),
                    )
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (address, log)
    }

    #[test]
    fn a_bearer_challenge_is_answered_with_an_anonymous_token() {
        let (address, log) = token_registry(
            r#"Bearer realm="REALM",service="test registry",scope="repository:team/app:pull""#,
        );
        let remote = parse(&format!("{address}/team/app:1"));
        let client = Client::new(&remote, true);
        let manifest = client.manifest("1").unwrap();
        assert_eq!(manifest.media_type, oci::MEDIA_TYPE_OCI_MANIFEST);
        assert_eq!(manifest.digest, Digest::of_bytes(&manifest.bytes));
        let log = log.lock().unwrap().clone();
        assert_eq!(
            log,
            [
                "/v2/team/app/manifests/1 []",
                "/token?scope=repository%3Ateam%2Fapp%3Apull&service=test%20registry []",
                "/v2/team/app/manifests/1 [Bearer t0k3n]",
            ]
        );
    }

    #[test]
    fn a_login_challenge_is_refused_in_one_line() {
        let (address, _) = token_registry(r#"Basic realm="Registry Realm""#);
        let remote = parse(&format!("{address}/app:1"));
        let error = Client::new(&remote, true).manifest("1").err().unwrap();
        assert_eq!(
            error.to_string(),
            format!(
                "registry {address} requires a login, which `shoal image fetch` does not support yet"
            )
        );
    }

    #[test]
    fn a_login_answers_a_basic_challenge_and_goes_with_a_token_request() {
        let (address, log) = token_registry(r#"Basic realm="Registry Realm""#);
        let remote = parse(&format!("{address}/app:1"));
        let client = Client::new(&remote, true).with_credentials("user", "pw");
        client.manifest("1").unwrap();
        assert_eq!(
            log.lock().unwrap().clone(),
            [
                "/v2/app/manifests/1 []",
                "/v2/app/manifests/1 [Basic dXNlcjpwdw==]"
            ]
        );
        let error = Client::new(&remote, true)
            .with_credentials("user", "wrong")
            .manifest("1")
            .err()
            .unwrap();
        assert_eq!(
            error.to_string(),
            format!(
                "registry {address} refused the login for app: check the user name and password"
            )
        );

        let (address, log) = token_registry(r#"Bearer realm="REALM",service="s""#);
        let remote = parse(&format!("{address}/app:1"));
        Client::new(&remote, true)
            .with_credentials("user", "pw")
            .manifest("1")
            .unwrap();
        let log = log.lock().unwrap().clone();
        assert_eq!(
            log[1],
            "/token?scope=repository%3Aapp%3Apull&service=s [Basic dXNlcjpwdw==]"
        );
        assert_eq!(log[2], "/v2/app/manifests/1 [Bearer t0k3n]");
    }
}

//! Machines joining the cluster: the join token, and the two requests a
//! joining machine makes before it has a certificate of its own.
//!
//! The token is made at a server's first start and kept in
//! `DATA_DIR/join-token`. It is `shoal1.<ca>.<secret>`: `<ca>` is the
//! SHA-256 of the cluster CA certificate (DER, hex), so a joining machine can
//! tell the real cluster from anything else answering at the address it was
//! given; `<secret>` proves to the server that the machine was invited.
//!
//! - `GET /cacerts`, unauthenticated: the CA certificate (PEM). The joining
//!   machine fetches it over an unverified connection and keeps it only if
//!   its hash is the token's.
//! - `POST /shoal/v1/join`, with `Authorization: Bearer <secret>`: the machine
//!   sends certificate requests for its keys (made on the machine, never
//!   sent); the server signs a client certificate naming the node as
//!   Kubernetes names nodes (`system:node:NAME` in `system:nodes`) and a
//!   serving certificate for the node agent's port, whatever the requests
//!   asked for.

use std::path::{Path, PathBuf};

use rcgen::{
    CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer,
    KeyPair, SanType,
};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::pki::PkiError;
use crate::status::ApiError;

/// The group every node's certificate names, and its user's prefix.
pub const NODES_GROUP: &str = "system:nodes";
pub const NODE_USER_PREFIX: &str = "system:node:";

const TOKEN_PREFIX: &str = "shoal1";

/// A parsed join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// SHA-256 of the CA certificate's DER, lowercase hex.
    pub ca_hash: String,
    pub secret: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid join token: {0}")]
pub struct TokenError(&'static str);

impl JoinToken {
    pub fn parse(text: &str) -> Result<JoinToken, TokenError> {
        let mut parts = text.trim().split('.');
        let (Some(prefix), Some(ca_hash), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError("expected shoal1.<ca hash>.<secret>"));
        };
        if prefix != TOKEN_PREFIX {
            return Err(TokenError("it does not start with shoal1."));
        }
        if ca_hash.len() != 64 || !ca_hash.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(TokenError("the CA hash is not 64 hex digits"));
        }
        if secret.len() < 16 {
            return Err(TokenError("the secret is too short"));
        }
        Ok(JoinToken {
            ca_hash: ca_hash.to_ascii_lowercase(),
            secret: secret.to_string(),
        })
    }

    pub fn text(&self) -> String {
        format!("{TOKEN_PREFIX}.{}.{}", self.ca_hash, self.secret)
    }
}

/// SHA-256 of the first certificate in `pem`, lowercase hex.
pub fn ca_hash(pem: &str) -> Option<String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()?;
    Some(
        sha2::Sha256::digest(der.as_ref())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect(),
    )
}

/// The token in `data_dir/join-token`, made (mode 0600) when absent.
pub fn ensure_token(data_dir: &Path, ca_pem: &str) -> Result<JoinToken, PkiError> {
    let path = data_dir.join("join-token");
    let io = |source| PkiError::Io {
        path: path.display().to_string(),
        source,
    };
    let hash = ca_hash(ca_pem).ok_or_else(|| PkiError::Invalid {
        path: "ca.crt".into(),
        reason: "no certificate in it".into(),
    })?;
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            if let Ok(token) = JoinToken::parse(&text)
                && token.ca_hash == hash
            {
                return Ok(token);
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(io(error)),
    }
    let secret: String = {
        use rand::Rng as _;
        let mut rng = rand::rng();
        (0..32)
            .map(|_| char::from(b"0123456789abcdefghijklmnopqrstuvwxyz"[rng.random_range(0..36)]))
            .collect()
    };
    let token = JoinToken {
        ca_hash: hash,
        secret,
    };
    crate::pki::write_file(&path, &format!("{}\n", token.text()), true)?;
    Ok(token)
}

/// What a joining machine sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    pub node_name: String,
    /// PEM certificate requests: one for the node's client key, one for its
    /// agent's serving key.
    pub client_csr: String,
    pub serving_csr: String,
    /// Names and addresses the agent's serving certificate must carry.
    #[serde(default)]
    pub serving_names: Vec<String>,
}

/// What it gets back.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinResponse {
    pub ca_certificate: String,
    pub client_certificate: String,
    pub serving_certificate: String,
}

/// Signs joins: holds the token's secret and the CA.
pub struct JoinAuthority {
    secret: String,
    ca_cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for JoinAuthority {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("JoinAuthority")
    }
}

impl JoinAuthority {
    /// The authority for the CA under `pki_dir` and `token`.
    pub fn load(pki_dir: &Path, token: &JoinToken) -> Result<JoinAuthority, PkiError> {
        let (ca_cert_pem, issuer) = crate::pki::load_issuer(pki_dir)?;
        Ok(JoinAuthority {
            secret: token.secret.clone(),
            ca_cert_pem,
            issuer,
        })
    }

    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// Checks `authorization` (the request's header) against the secret, in
    /// time that does not depend on where they differ.
    pub fn admits(&self, authorization: &str) -> bool {
        let Some(presented) = authorization.strip_prefix("Bearer ") else {
            return false;
        };
        let presented = presented.trim();
        let expected = self.secret.as_bytes();
        presented.len() == expected.len()
            && presented
                .bytes()
                .zip(expected)
                .fold(0u8, |difference, (a, b)| difference | (a ^ b))
                == 0
    }

    /// Signs a join request's certificates.
    pub fn sign(&self, request: &JoinRequest) -> Result<JoinResponse, ApiError> {
        validate_node_name(&request.node_name)?;
        let mut client = csr(&request.client_csr, "clientCsr")?;
        let mut subject = DistinguishedName::new();
        subject.push(DnType::OrganizationName, NODES_GROUP);
        subject.push(
            DnType::CommonName,
            format!("{NODE_USER_PREFIX}{}", request.node_name),
        );
        client.params = crate::pki::leaf_params_for(subject, 1).map_err(internal)?;
        client.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_certificate = client.signed_by(&self.issuer).map_err(internal)?.pem();

        let mut serving = csr(&request.serving_csr, "servingCsr")?;
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, request.node_name.as_str());
        serving.params = crate::pki::leaf_params_for(subject, 1).map_err(internal)?;
        serving.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let mut names = request.serving_names.clone();
        names.push(request.node_name.clone());
        names.sort();
        names.dedup();
        for name in &names {
            serving.params.subject_alt_names.push(match name.parse() {
                Ok(address) => SanType::IpAddress(address),
                Err(_) => SanType::DnsName(name.clone().try_into().map_err(|_| {
                    ApiError::bad_request(format!("servingNames: {name:?} is not a DNS name"))
                })?),
            });
        }
        let serving_certificate = serving.signed_by(&self.issuer).map_err(internal)?.pem();
        Ok(JoinResponse {
            ca_certificate: self.ca_cert_pem.clone(),
            client_certificate,
            serving_certificate,
        })
    }
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("cannot sign the node's certificate: {error}"))
}

fn csr(pem: &str, field: &str) -> Result<CertificateSigningRequestParams, ApiError> {
    CertificateSigningRequestParams::from_pem(pem).map_err(|error| {
        ApiError::bad_request(format!("{field}: not a certificate request: {error}"))
    })
}

/// A node name is a DNS subdomain (RFC 1123), as Kubernetes requires.
pub fn validate_node_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid node name {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        )))
    }
}

/// Where a joined machine keeps what it got: its key pairs, certificates and
/// kubeconfig, under `DATA_DIR/pki`.
pub fn node_files(data_dir: &Path) -> NodeFiles {
    let dir = data_dir.join("pki");
    NodeFiles {
        ca: dir.join("ca.crt"),
        client_cert: dir.join("node.crt"),
        client_key: dir.join("node.key"),
        serving_cert: dir.join("agent.crt"),
        serving_key: dir.join("agent.key"),
        kubeconfig: data_dir.join("node.kubeconfig"),
        dir,
    }
}

/// The files of [`node_files`].
#[derive(Debug, Clone)]
pub struct NodeFiles {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub kubeconfig: PathBuf,
}

/// A key pair and a certificate request for it, PEM (the request's subject
/// is a courtesy: the server names the certificate itself).
pub fn key_and_request(common_name: &str) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = {
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, common_name);
        name
    };
    let request = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), request.pem()?))
}

impl crate::Api {
    /// Answers the two join paths, the only ones served without a client
    /// certificate.
    pub(crate) fn handle_join(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
    ) -> hyper::Response<crate::server::Body> {
        use crate::respond;
        let Some(authority) = self.config.join.as_ref() else {
            return respond::error(&ApiError::unauthorized());
        };
        if parts.uri.path() == "/cacerts" {
            return respond::text(200, authority.ca_cert_pem());
        }
        let authorization = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        if !authority.admits(authorization) {
            tracing::warn!("a join with a wrong token was refused");
            return respond::error(&ApiError::unauthorized());
        }
        let request: JoinRequest = match serde_json::from_slice(body) {
            Ok(request) => request,
            Err(error) => {
                return respond::error(&ApiError::bad_request(format!(
                    "the join request is not valid: {error}"
                )));
            }
        };
        match authority.sign(&request) {
            Ok(response) => {
                tracing::info!(node = %request.node_name, "a machine joined");
                respond::json(200, &serde_json::to_value(&response).unwrap_or_default())
            }
            Err(error) => respond::error(&error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_print() {
        let text = format!("shoal1.{}.{}", "ab".repeat(32), "s".repeat(32));
        let token = JoinToken::parse(&text).unwrap();
        assert_eq!(token.text(), text);
        assert_eq!(token.secret, "s".repeat(32));
        for bad in [
            "",
            "shoal1..x",
            "shoal2.aa.bbbbbbbbbbbbbbbbbbbb",
            &format!("shoal1.{}.short", "ab".repeat(32)),
            &format!("shoal1.{}.{}", "zz".repeat(32), "s".repeat(32)),
            &format!("shoal1.{}.{}.extra", "ab".repeat(32), "s".repeat(32)),
        ] {
            assert!(JoinToken::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_join_is_signed_with_the_node_identity_whatever_was_asked() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::pki::ensure(
            &dir.path().join("pki"),
            &["127.0.0.1".into()],
            "https://127.0.0.1:6443",
        )
        .unwrap();
        let token = ensure_token(dir.path(), &pki.ca_cert_pem).unwrap();
        // The token is kept: a second start finds the same one.
        assert_eq!(ensure_token(dir.path(), &pki.ca_cert_pem).unwrap(), token);
        assert_eq!(Some(token.ca_hash.clone()), ca_hash(&pki.ca_cert_pem));
        let authority = JoinAuthority::load(&dir.path().join("pki"), &token).unwrap();
        assert!(authority.admits(&format!("Bearer {}", token.secret)));
        assert!(!authority.admits("Bearer wrong"));
        assert!(!authority.admits(&token.secret));

        let (_, client_csr) = key_and_request("system:masters-please").unwrap();
        let (_, serving_csr) = key_and_request("x").unwrap();
        let response = authority
            .sign(&JoinRequest {
                node_name: "worker-1".into(),
                client_csr,
                serving_csr,
                serving_names: vec!["10.0.0.7".into()],
            })
            .unwrap();
        let der = rustls::pki_types::CertificateDer::from_pem_slice(
            response.client_certificate.as_bytes(),
        )
        .unwrap();
        let user = crate::server::user_of(&der).unwrap();
        assert_eq!(user.name, "system:node:worker-1");
        assert!(user.groups.contains(&NODES_GROUP.to_string()));
        assert!(!user.groups.iter().any(|group| group == "system:masters"));

        let bad = authority.sign(&JoinRequest {
            node_name: "Bad_Name".into(),
            client_csr: "x".into(),
            serving_csr: "y".into(),
            serving_names: vec![],
        });
        assert!(bad.unwrap_err().message.contains("invalid node name"));
    }

    use rustls::pki_types::pem::PemObject as _;
}

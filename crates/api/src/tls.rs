//! TLS on the client port, as etcd serves it: the certificate and key of
//! `--cert-file`/`--key-file` (or one made at start under
//! `DATA_DIR/fixtures/client/` for `--auto-tls`), client certificates
//! checked against `--trusted-ca-file` (required with `--client-cert-auth`,
//! verified when offered otherwise), ALPN `http/1.1` and `h2`. The
//! certificate and key are read again when either file's modification time
//! changes, so a renewed certificate is served without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use store::config::TlsFiles;

use crate::conn::ConnInfo;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a self-signed `--auto-tls` certificate is valid (etcd: one year).
const AUTO_TLS_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why the client TLS settings cannot be used. Each message is one line
/// naming the file involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("cannot make the --auto-tls certificate in {dir}: {reason}")]
    AutoTls { dir: String, reason: String },
    #[error("TLS settings: {0}")]
    Settings(String),
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The certificates of a PEM file (at least one).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|error| file_error(path, error))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(path, format!("not a PEM certificate file: {error}")))?;
    if certificates.is_empty() {
        return Err(file_error(path, "no PEM certificate in the file"));
    }
    for certificate in &certificates {
        x509_parser::parse_x509_certificate(certificate.as_ref())
            .map_err(|error| file_error(path, format!("malformed certificate: {error}")))?;
    }
    Ok(certificates)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|error| file_error(path, error))?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|error| file_error(path, format!("not a PEM private key: {error}")))
}

/// A certificate and its key, checked to belong together.
fn certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let certificates = read_certificates(cert_path)?;
    let key = read_private_key(key_path)?;
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| file_error(key_path, format!("unusable private key: {error}")))?;
    let certified = CertifiedKey::new(certificates, signing_key);
    certified.keys_match().map_err(|error| {
        file_error(
            key_path,
            format!(
                "does not match the certificate in {}: {error}",
                cert_path.display()
            ),
        )
    })?;
    Ok(certified)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
}

/// The serving certificate, read again from its files when either changes.
#[derive(Debug)]
pub struct ReloadingCertificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    cert_modified: Option<SystemTime>,
    key_modified: Option<SystemTime>,
    key: Arc<CertifiedKey>,
}

impl ReloadingCertificate {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<ReloadingCertificate, TlsError> {
        let cert_modified = modified(cert_path);
        let key_modified = modified(key_path);
        let key = Arc::new(certified_key(cert_path, key_path)?);
        Ok(ReloadingCertificate {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: Mutex::new(Loaded {
                cert_modified,
                key_modified,
                key,
            }),
        })
    }

    /// The certificate to serve now: the files' if they changed and read
    /// well, else the one served before (a half-written renewal must not
    /// take the port down).
    pub fn current(&self) -> Arc<CertifiedKey> {
        let cert_modified = modified(&self.cert_path);
        let key_modified = modified(&self.key_path);
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cert_modified != current.cert_modified || key_modified != current.key_modified {
            match certified_key(&self.cert_path, &self.key_path) {
                Ok(key) => {
                    tracing::info!(cert_file = %self.cert_path.display(), "reloaded the client TLS certificate");
                    current.key = Arc::new(key);
                    current.cert_modified = cert_modified;
                    current.key_modified = key_modified;
                }
                Err(error) => {
                    // Tried again at the next handshake; said once per change.
                    tracing::warn!(%error, "keeping the previous client TLS certificate");
                    current.cert_modified = cert_modified;
                    current.key_modified = key_modified;
                }
            }
        }
        Arc::clone(&current.key)
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Makes (or finds, from an earlier start) etcd's `--auto-tls` certificate
/// under `dir`: a self-signed ECDSA P-256 certificate for `hosts`.
/// Returns the certificate and key paths.
pub fn self_signed(dir: &Path, hosts: &[String]) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let auto_error = |reason: String| TlsError::AutoTls {
        dir: dir.display().to_string(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|error| auto_error(error.to_string()))?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|error| auto_error(error.to_string()))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|error| auto_error(error.to_string()))?;
    for host in hosts {
        let name =
            match host.parse::<std::net::IpAddr>() {
                Ok(address) => rcgen::SanType::IpAddress(address),
                Err(_) => rcgen::SanType::DnsName(host.clone().try_into().map_err(
                    |error: rcgen::Error| auto_error(format!("host {host:?}: {error}")),
                )?),
            };
        if !params.subject_alt_names.contains(&name) {
            params.subject_alt_names.push(name);
        }
    }
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(rcgen::DnType::OrganizationName, "etcd");
    params.distinguished_name = subject;
    let now = SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now + AUTO_TLS_VALIDITY).into();
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let certificate = params
        .self_signed(&key)
        .map_err(|error| auto_error(error.to_string()))?;
    write_file(&key_path, &key.serialize_pem(), true).map_err(auto_error)?;
    write_file(&cert_path, &certificate.pem(), false).map_err(auto_error)?;
    Ok((cert_path, key_path))
}

fn write_file(path: &Path, text: &str, secret: bool) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&partial)
        .map_err(|error| format!("{}: {error}", partial.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|error| format!("{}: {error}", partial.display()))?;
    std::fs::rename(&partial, path).map_err(|error| format!("{}: {error}", path.display()))
}

/// The rustls settings for the client port. `auto_tls_dir` is where
/// `--auto-tls` keeps its certificate, made for `hosts`. `None` when the
/// files name no certificate and `--auto-tls` is off: no URL can be https.
pub fn server_config(
    files: &TlsFiles,
    auto_tls_dir: &Path,
    hosts: &[String],
) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    let (cert_path, key_path) = match (&files.cert_file, &files.key_file) {
        (Some(cert), Some(key)) => {
            if files.auto_tls {
                tracing::warn!("ignoring client auto TLS since certs given");
            }
            (cert.clone(), key.clone())
        }
        (None, None) if files.auto_tls => self_signed(auto_tls_dir, hosts)?,
        (None, None) => return Ok(None),
        _ => {
            return Err(TlsError::Settings(
                "--cert-file and --key-file must be given together".into(),
            ));
        }
    };
    let certificate = Arc::new(ReloadingCertificate::load(&cert_path, &key_path)?);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Settings(error.to_string()))?;
    let mut config = match &files.trusted_ca_file {
        Some(ca_path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in read_certificates(ca_path)? {
                roots
                    .add(ca)
                    .map_err(|error| file_error(ca_path, format!("unusable CA: {error}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            // Without --client-cert-auth a certificate is checked when a
            // client offers one (and then names it), not asked for.
            let verifier = if files.client_cert_auth {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|error| file_error(ca_path, format!("unusable CA: {error}")))?;
            builder
                .with_client_cert_verifier(verifier)
                .with_cert_resolver(certificate)
        }
        None if files.client_cert_auth => {
            return Err(TlsError::Settings(
                "--client-cert-auth needs --trusted-ca-file".into(),
            ));
        }
        None => builder
            .with_no_client_auth()
            .with_cert_resolver(certificate),
    };
    // HTTP/1.1 first: rustls picks by the server's order, so a client that
    // offers both (curl) gets HTTP/1.1 and reaches the JSON gateway and the
    // v2 API, which this port serves over HTTP/1.1 only; gRPC clients offer
    // `h2` alone and get it. (etcd also serves the gateway over HTTP/2.)
    config.alpn_protocols = vec![b"http/1.1".to_vec(), b"h2".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// The common name of a DER certificate's subject.
pub fn common_name(certificate: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let name = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|name| name.as_str().ok())?
        .to_string();
    Some(name)
}

/// Runs the server side of a client's TLS handshake and learns who the
/// client is. A refused handshake (no certificate under
/// `--client-cert-auth`, an expired or foreign one) is logged with the
/// peer's address and the reason, never the certificate's contents.
pub async fn accept(
    acceptor: &tokio_rustls::TlsAcceptor,
    socket: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
) -> Option<(
    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    Arc<ConnInfo>,
)> {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::warn!(remote = %peer, %error, "rejected client TLS connection");
            return None;
        }
        Err(_) => {
            tracing::warn!(remote = %peer, "rejected client TLS connection: handshake timed out");
            return None;
        }
    };
    let cert_common_name = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certificates| certificates.first())
        .and_then(common_name)
        .map(Arc::from);
    Some((stream, Arc::new(ConnInfo { cert_common_name })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_tls_certificate_is_made_once_and_served() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = dir.path().join("fixtures/client");
        let files = TlsFiles {
            auto_tls: true,
            ..TlsFiles::default()
        };
        let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
        let config = server_config(&files, &fixtures, &hosts).unwrap();
        assert!(config.is_some());
        let first = std::fs::read(fixtures.join("cert.pem")).unwrap();
        server_config(&files, &fixtures, &hosts).unwrap();
        assert_eq!(std::fs::read(fixtures.join("cert.pem")).unwrap(), first);
        assert!(
            server_config(&TlsFiles::default(), &fixtures, &hosts)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn malformed_files_are_named_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(&key, "nothing").unwrap();
        let files = TlsFiles {
            cert_file: Some(cert.clone()),
            key_file: Some(key.clone()),
            ..TlsFiles::default()
        };
        let error = server_config(&files, dir.path(), &[])
            .unwrap_err()
            .to_string();
        assert!(error.starts_with(&cert.display().to_string()), "{error}");
        assert!(!error.contains('\n'), "{error}");
        // A good certificate with a bad key names the key file.
        let (auto_cert, _) = self_signed(&dir.path().join("auto"), &["127.0.0.1".into()]).unwrap();
        std::fs::copy(auto_cert, &cert).unwrap();
        let error = server_config(&files, dir.path(), &[])
            .unwrap_err()
            .to_string();
        assert!(error.starts_with(&key.display().to_string()), "{error}");
        let missing = TlsFiles {
            trusted_ca_file: Some(dir.path().join("missing-ca.pem")),
            auto_tls: true,
            ..TlsFiles::default()
        };
        let error = server_config(&missing, &dir.path().join("auto"), &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("missing-ca.pem"), "{error}");
    }

    #[test]
    fn a_changed_certificate_is_served_at_the_next_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(&dir.path().join("one"), &["127.0.0.1".into()]).unwrap();
        let served_cert = dir.path().join("cert.pem");
        let served_key = dir.path().join("key.pem");
        std::fs::copy(&cert, &served_cert).unwrap();
        std::fs::copy(&key, &served_key).unwrap();
        let reloading = ReloadingCertificate::load(&served_cert, &served_key).unwrap();
        let before = reloading.current().cert[0].clone();
        let (cert, key) = self_signed(&dir.path().join("two"), &["127.0.0.1".into()]).unwrap();
        // Modification times have a coarse grain on some file systems.
        let later = SystemTime::now() + Duration::from_secs(5);
        for (from, to) in [(&cert, &served_cert), (&key, &served_key)] {
            std::fs::copy(from, to).unwrap();
            std::fs::File::options()
                .write(true)
                .open(to)
                .unwrap()
                .set_modified(later)
                .unwrap();
        }
        let after = reloading.current().cert[0].clone();
        assert_ne!(before, after);
        assert_eq!(after, read_certificates(&cert).unwrap()[0]);
        // A broken file keeps the certificate served before.
        std::fs::write(&served_cert, "broken").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&served_cert)
            .unwrap()
            .set_modified(later + Duration::from_secs(5))
            .unwrap();
        assert_eq!(reloading.current().cert[0], after);
    }
}

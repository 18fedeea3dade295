//! The cluster's certificates, made on first start under the data directory:
//! a CA, the API server's serving certificate (made anew at every start, so
//! its names follow `--advertise-address`), an admin client certificate,
//! with the kubeconfig that uses it, and the API server's client
//! certificate for node agents (`apiserver-kubelet-client`). Node agents
//! get their serving certificates from the same CA
//! ([`issue_serving_certificate`]).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The user and group of the admin certificate: `system:masters` is the
/// group Kubernetes grants everything.
pub const ADMIN_USER: &str = "shoal-admin";
pub const ADMIN_GROUP: &str = "system:masters";
/// The user the API server is when it calls a node agent (kubeadm's name
/// for kube-apiserver's kubelet client certificate).
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a usable certificate or key: {reason}")]
    Invalid { path: String, reason: String },
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The certificates the API server serves with and trusts.
pub struct Pki {
    pub dir: PathBuf,
    pub ca_cert_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    pub admin_kubeconfig: PathBuf,
    /// The API server's client certificate and key for node agents.
    pub kubelet_client_cert_pem: String,
    pub kubelet_client_key_pem: String,
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Writes `text` to `path` atomically (mode 0600 when `secret`).
pub fn write_file(path: &Path, text: &str, secret: bool) -> Result<(), PkiError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| PkiError::Io {
        path: path.display().to_string(),
        source,
    };
    // Written beside and renamed, so a crash never leaves half a key.
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&partial)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&partial, path).map_err(io)
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    if let Some(organization) = organization {
        name.push(DnType::OrganizationName, organization);
    }
    name.push(DnType::CommonName, common_name);
    name
}

fn leaf_params(
    common_name: &str,
    organization: Option<&str>,
    years: i64,
) -> Result<CertificateParams, PkiError> {
    leaf_params_for(name(common_name, organization), years)
}

/// A leaf certificate's settings for `subject`, valid from an hour ago for
/// `years`.
pub fn leaf_params_for(
    subject: DistinguishedName,
    years: i64,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = subject;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.use_authority_key_identifier_extension = true;
    let now =
        rcgen::date_time_ymd(1970, 1, 1) + std::time::UNIX_EPOCH.elapsed().unwrap_or_default();
    params.not_before = now - std::time::Duration::from_secs(3600);
    params.not_after = now + std::time::Duration::from_secs(years as u64 * 365 * 86_400);
    Ok(params)
}

/// Loads the CA under `dir`, or makes one; makes the serving certificate for
/// `names` (DNS names and IP addresses) and, once, the admin certificate and
/// kubeconfig for `server_url`.
pub fn ensure(dir: &Path, names: &[String], server_url: &str) -> Result<Pki, PkiError> {
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let ca_cert_path = dir.join("ca.crt");
    let ca_key_path = dir.join("ca.key");
    if !ca_cert_path.exists() || !ca_key_path.exists() {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name("shoal-ca", None);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now =
            rcgen::date_time_ymd(1970, 1, 1) + std::time::UNIX_EPOCH.elapsed().unwrap_or_default();
        params.not_before = now - std::time::Duration::from_secs(3600);
        params.not_after = now + std::time::Duration::from_secs(10 * 365 * 86_400);
        let cert = params.self_signed(&key)?;
        write_file(&ca_key_path, &key.serialize_pem(), true)?;
        write_file(&ca_cert_path, &cert.pem(), false)?;
    }
    let (ca_cert_pem, issuer) = load_issuer(dir)?;

    // The serving certificate, for every name the server is reached by.
    let (serving_cert_pem, serving_key_pem) =
        serving_certificate(&issuer, "shoal-apiserver", names)?;
    write_file(&dir.join("apiserver.crt"), &serving_cert_pem, false)?;
    write_file(&dir.join("apiserver.key"), &serving_key_pem, true)?;

    let admin_kubeconfig = dir.parent().map_or_else(
        || PathBuf::from("admin.kubeconfig"),
        |parent| parent.join("admin.kubeconfig"),
    );
    let admin_cert_path = dir.join("admin.crt");
    let admin_key_path = dir.join("admin.key");
    if !admin_cert_path.exists() || !admin_key_path.exists() {
        let (cert, key) = client_certificate(&issuer, ADMIN_USER, &[ADMIN_GROUP])?;
        write_file(&admin_key_path, &key, true)?;
        write_file(&admin_cert_path, &cert, false)?;
    }
    let kubelet_client_cert_path = dir.join("apiserver-kubelet-client.crt");
    let kubelet_client_key_path = dir.join("apiserver-kubelet-client.key");
    if !kubelet_client_cert_path.exists() || !kubelet_client_key_path.exists() {
        let (cert, key) = client_certificate(&issuer, KUBELET_CLIENT_USER, &[])?;
        write_file(&kubelet_client_key_path, &key, true)?;
        write_file(&kubelet_client_cert_path, &cert, false)?;
    }
    // Rewritten at every start: the server's address may have changed.
    let kubeconfig = kubeconfig(
        server_url,
        &ca_cert_pem,
        &read(&admin_cert_path)?,
        &read(&admin_key_path)?,
    );
    write_file(&admin_kubeconfig, &kubeconfig, true)?;
    Ok(Pki {
        dir: dir.to_path_buf(),
        ca_cert_pem,
        serving_cert_pem,
        serving_key_pem,
        admin_kubeconfig,
        kubelet_client_cert_pem: read(&kubelet_client_cert_path)?,
        kubelet_client_key_pem: read(&kubelet_client_key_path)?,
    })
}

/// The CA under `dir`: its certificate (PEM) and the issuer that signs with
/// its key.
pub fn load_issuer(dir: &Path) -> Result<(String, Issuer<'static, KeyPair>), PkiError> {
    let ca_cert_path = dir.join("ca.crt");
    let ca_key_path = dir.join("ca.key");
    let ca_cert_pem = read(&ca_cert_path)?;
    let invalid = |path: &Path, error: rcgen::Error| PkiError::Invalid {
        path: path.display().to_string(),
        reason: error.to_string(),
    };
    let ca_key =
        KeyPair::from_pem(&read(&ca_key_path)?).map_err(|error| invalid(&ca_key_path, error))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key)
        .map_err(|error| invalid(&ca_cert_path, error))?;
    Ok((ca_cert_pem, issuer))
}

/// A serving certificate named `common_name` for `names` (DNS names and IP
/// addresses, as subject alternative names), and its key, as PEM.
fn serving_certificate(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    names: &[String],
) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = leaf_params(common_name, None, 1)?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    for name in names {
        params.subject_alt_names.push(match name.parse() {
            Ok(address) => SanType::IpAddress(address),
            Err(_) => SanType::DnsName(name.clone().try_into()?),
        });
    }
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A serving certificate from the cluster CA under `dir`, for a node
/// agent's streaming port: `common_name` (kubelet uses the node's name) and
/// the node's addresses and host names as `names`. Returns the certificate
/// and key as PEM, and the CA's certificate (to verify the API server's
/// client certificate with).
pub fn issue_serving_certificate(
    dir: &Path,
    common_name: &str,
    names: &[String],
) -> Result<(String, String, String), PkiError> {
    let (ca_cert_pem, issuer) = load_issuer(dir)?;
    let (cert, key) = serving_certificate(&issuer, common_name, names)?;
    Ok((cert, key, ca_cert_pem))
}

/// A client certificate from the cluster CA under `dir` for `user` in
/// `groups`, and its key, as PEM.
pub fn issue_client_certificate(
    dir: &Path,
    user: &str,
    groups: &[&str],
) -> Result<(String, String), PkiError> {
    let (_, issuer) = load_issuer(dir)?;
    client_certificate(&issuer, user, groups)
}

/// A client certificate for `user` in `groups` (the common name and
/// organizations, as Kubernetes reads them), and its key, as PEM.
pub fn client_certificate(
    issuer: &Issuer<'_, KeyPair>,
    user: &str,
    groups: &[&str],
) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = leaf_params(user, None, 1)?;
    let mut subject = DistinguishedName::new();
    for group in groups {
        subject.push(DnType::OrganizationName, *group);
    }
    subject.push(DnType::CommonName, user);
    params.distinguished_name = subject;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn base64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A kubeconfig with one cluster, user and context, all named `shoal`.
pub fn kubeconfig(server_url: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: shoal\n  cluster:\n    server: {server_url}\n    certificate-authority-data: {}\nusers:\n- name: shoal\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: shoal\n  context:\n    cluster: shoal\n    user: shoal\ncurrent-context: shoal\n",
        base64(ca_pem),
        base64(cert_pem),
        base64(key_pem)
    )
}

/// The kubeconfig of one of shoal's own components that reaches the API as
/// `user` (its certificate made once under `dir` as `NAME.crt`/`NAME.key`,
/// the kubeconfig `NAME.kubeconfig` rewritten for `server_url`): each
/// component its own user, so RBAC gives each only what it needs.
pub fn component_kubeconfig(
    dir: &Path,
    name: &str,
    user: &str,
    server_url: &str,
) -> Result<PathBuf, PkiError> {
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    if !cert_path.exists() || !key_path.exists() {
        let (_, issuer) = load_issuer(dir)?;
        let (cert, key) = client_certificate(&issuer, user, &[])?;
        write_file(&key_path, &key, true)?;
        write_file(&cert_path, &cert, false)?;
    }
    let path = dir.join(format!("{name}.kubeconfig"));
    let text = kubeconfig(
        server_url,
        &read(&dir.join("ca.crt"))?,
        &read(&cert_path)?,
        &read(&key_path)?,
    );
    write_file(&path, &text, true)?;
    Ok(path)
}

//! Certificates for the TLS tests, made with rcgen into a directory: a CA
//! with a server certificate for 127.0.0.1 and localhost and a client
//! certificate; a second CA with a client certificate of its own (which the
//! first CA's servers must refuse); and an expired client certificate from
//! the first CA.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The common name of the client certificate: etcd's user under client
/// certificate authentication.
pub const CLIENT_COMMON_NAME: &str = "shoal-test-client";

/// The files of a test PKI.
pub struct TestPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
    pub expired_client_cert: PathBuf,
    pub expired_client_key: PathBuf,
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn ca(common_name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("a CA key");
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let certificate = params.self_signed(&key).expect("a CA certificate");
    (certificate.pem(), Issuer::new(params, key))
}

fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    common_name: &str,
    server: bool,
    not_after: SystemTime,
) -> (String, String) {
    let key = KeyPair::generate().expect("a leaf key");
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name);
    params.not_before = (SystemTime::now() - Duration::from_secs(2 * 86_400)).into();
    params.not_after = not_after.into();
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    if server {
        params.subject_alt_names = vec![
            SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])),
            SanType::DnsName("localhost".try_into().expect("a DNS name")),
        ];
        // etcd's own examples give members one certificate for both sides.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
    } else {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    let certificate = params.signed_by(&key, issuer).expect("a leaf certificate");
    (certificate.pem(), key.serialize_pem())
}

impl TestPki {
    /// Writes a fresh PKI into `dir`.
    pub fn new(dir: &Path) -> TestPki {
        let write = |file: &str, text: &str| {
            let path = dir.join(file);
            std::fs::write(&path, text).expect("write a test certificate");
            path
        };
        let in_a_year = SystemTime::now() + Duration::from_secs(365 * 86_400);
        let (ca_pem, issuer) = ca("shoal test CA");
        let (server_cert, server_key) = leaf(&issuer, "shoal-test-server", true, in_a_year);
        let (client_cert, client_key) = leaf(&issuer, CLIENT_COMMON_NAME, false, in_a_year);
        let yesterday = SystemTime::now() - Duration::from_secs(86_400);
        let (expired_cert, expired_key) = leaf(&issuer, CLIENT_COMMON_NAME, false, yesterday);
        let (other_ca_pem, other_issuer) = ca("another CA");
        let (other_cert, other_key) = leaf(&other_issuer, CLIENT_COMMON_NAME, false, in_a_year);
        TestPki {
            ca: write("ca.pem", &ca_pem),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server-key.pem", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client-key.pem", &client_key),
            other_ca: write("other-ca.pem", &other_ca_pem),
            other_client_cert: write("other-client.pem", &other_cert),
            other_client_key: write("other-client-key.pem", &other_key),
            expired_client_cert: write("expired-client.pem", &expired_cert),
            expired_client_key: write("expired-client-key.pem", &expired_key),
        }
    }

    /// The server's flags: TLS on the client port, client certificates
    /// from the CA required when `client_cert_auth`.
    pub fn server_args(&self, client_cert_auth: bool) -> Vec<String> {
        let mut args = vec![
            format!("--cert-file={}", self.server_cert.display()),
            format!("--key-file={}", self.server_key.display()),
            format!("--trusted-ca-file={}", self.ca.display()),
        ];
        if client_cert_auth {
            args.push("--client-cert-auth".to_string());
        }
        args
    }

    /// etcdctl's flags for the good client certificate.
    pub fn etcdctl_args(&self) -> Vec<String> {
        vec![
            format!("--cacert={}", self.ca.display()),
            format!("--cert={}", self.client_cert.display()),
            format!("--key={}", self.client_key.display()),
        ]
    }
}

//! Image trust: which ed25519 keys may vouch for which image names, detached
//! signatures over an image's manifest digest, and the check `run` makes.
//!
//! Keys are PEM files as openssl writes them (`openssl genpkey -algorithm
//! ed25519` for a private key, `openssl pkey -pubout` for its public half), or
//! as `shoal trust keygen` writes them. Why ed25519 rather than rkt's OpenPGP
//! or cosign: small keys and signatures, one fast, misuse-resistant algorithm,
//! no keyring format to parse, and a pure-Rust implementation; see
//! docs/runtime.md.
//!
//! Layout under `DATA_DIR/runtime/`:
//! ```text
//! trust.json                          trusted keys and the name prefixes they cover
//! signatures/<manifest hex>/<id>.json one signature: name, manifest digest, key, bytes
//! ```

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::image::reference::name_has_prefix;
use crate::image::store::{Store, write_atomically};

/// The prefix shown for a key trusted for every name (`--root`).
pub const ROOT_PREFIX: &str = "*";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrustedKey {
    /// Names this key may sign: a name prefix, or `*` for every name.
    pub prefix: String,
    /// sha256 of the raw 32-byte public key.
    pub fingerprint: Digest,
    /// The public key, as PEM (SubjectPublicKeyInfo).
    pub public_key_pem: String,
}

#[derive(Default, Serialize, Deserialize)]
struct TrustTable {
    keys: Vec<TrustedKey>,
}

/// A detached signature, stored beside the image it signs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageSignature {
    /// The repository name (no tag) the signer vouches for.
    pub name: String,
    pub manifest_digest: Digest,
    pub key_fingerprint: Digest,
    /// The ed25519 signature over `signed_payload(name, manifest_digest)`, hex.
    pub signature: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(
        "no key is trusted for image {name}: add one with `shoal trust add --prefix {name} KEYFILE`, or run with --insecure-options=image"
    )]
    NoTrustedKey { name: String },
    #[error(
        "image {name} ({digest}) has no signature: sign it with `shoal image sign {name} --key KEYFILE`, or run with --insecure-options=image"
    )]
    Unsigned { name: String, digest: Digest },
    #[error(
        "image {name} ({digest}) is signed only by keys not trusted for it ({signers}): trust the signer's key with `shoal trust add --prefix {name} KEYFILE`"
    )]
    UntrustedSigner {
        name: String,
        digest: Digest,
        signers: String,
    },
    #[error("image {name} ({digest}): the signature by trusted key {fingerprint} does not verify")]
    BadSignature {
        name: String,
        digest: Digest,
        fingerprint: Digest,
    },
}

/// The bytes a signature covers. The name is part of them so that a
/// signature for `example.com/app` cannot vouch for the same image imported
/// as another name.
pub fn signed_payload(name: &str, manifest_digest: &Digest) -> Vec<u8> {
    format!("shoal image signature v1\nname: {name}\nmanifest: {manifest_digest}\n").into_bytes()
}

pub fn fingerprint(key: &VerifyingKey) -> Digest {
    Digest::of_bytes(key.as_bytes())
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|idx| u8::from_str_radix(text.get(idx..idx + 2)?, 16).ok())
        .collect()
}

pub fn read_public_key(path: &Path) -> anyhow::Result<VerifyingKey> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    if let Ok(key) = VerifyingKey::from_public_key_pem(&text) {
        return Ok(key);
    }
    if SigningKey::from_pkcs8_pem(&text).is_ok() {
        bail!(
            "{} is a private key: trust its public half (`openssl pkey -in {} -pubout`)",
            path.display(),
            path.display()
        );
    }
    bail!(
        "{} is not an ed25519 public key in PEM form",
        path.display()
    )
}

pub fn read_private_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    SigningKey::from_pkcs8_pem(&text).map_err(|_| {
        anyhow::anyhow!(
            "{} is not an ed25519 private key in PEM (PKCS#8) form",
            path.display()
        )
    })
}

/// Writes a new private key to `path` (mode 0600) and its public half to
/// `path.pub`; returns the public key's fingerprint.
pub fn generate_key(path: &Path) -> anyhow::Result<(Digest, PathBuf)> {
    let signing_key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let private_pem = signing_key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|error| anyhow::anyhow!("cannot encode key: {error}"))?;
    let public_pem = signing_key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|error| anyhow::anyhow!("cannot encode key: {error}"))?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    io::Write::write_all(&mut file, private_pem.as_bytes())?;
    let mut public_path = path.as_os_str().to_owned();
    public_path.push(".pub");
    let public_path = PathBuf::from(public_path);
    fs::write(&public_path, public_pem)
        .with_context(|| format!("cannot write {}", public_path.display()))?;
    Ok((fingerprint(&signing_key.verifying_key()), public_path))
}

pub struct Trust<'store> {
    store: &'store Store,
}

impl<'store> Trust<'store> {
    pub fn new(store: &'store Store) -> Trust<'store> {
        Trust { store }
    }

    fn table_path(&self) -> PathBuf {
        self.store.root().join("trust.json")
    }

    fn read_table(&self) -> anyhow::Result<TrustTable> {
        let path = self.table_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is corrupt", path.display())),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(TrustTable::default()),
            Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub fn keys(&self) -> anyhow::Result<Vec<TrustedKey>> {
        Ok(self.read_table()?.keys)
    }

    /// Trusts `key` for names under `prefix` (`None`: every name).
    pub fn add(&self, prefix: Option<&str>, key: &VerifyingKey) -> anyhow::Result<TrustedKey> {
        let prefix = match prefix {
            Some(prefix) => {
                let prefix = prefix.trim_end_matches('/');
                if prefix.is_empty() || prefix == ROOT_PREFIX {
                    bail!("invalid --prefix {prefix:?}: use --root to trust a key for every name");
                }
                prefix.to_string()
            }
            None => ROOT_PREFIX.to_string(),
        };
        let entry = TrustedKey {
            prefix,
            fingerprint: fingerprint(key),
            public_key_pem: key
                .to_public_key_pem(LineEnding::LF)
                .map_err(|error| anyhow::anyhow!("cannot encode key: {error}"))?,
        };
        let _lock = self.store.lock()?;
        let mut table = self.read_table()?;
        if !table.keys.contains(&entry) {
            table.keys.push(entry.clone());
        }
        write_atomically(&self.table_path(), &serde_json::to_vec_pretty(&table)?)?;
        Ok(entry)
    }

    /// Stops trusting a key (by fingerprint or a unique prefix of its hex),
    /// for one prefix or for all. Returns the entries removed.
    pub fn remove(
        &self,
        fingerprint_text: &str,
        prefix: Option<&str>,
    ) -> anyhow::Result<Vec<TrustedKey>> {
        let _lock = self.store.lock()?;
        let mut table = self.read_table()?;
        let hex = fingerprint_text
            .strip_prefix("sha256:")
            .unwrap_or(fingerprint_text);
        if hex.len() < 8 {
            bail!("key fingerprint {fingerprint_text:?} is too short: give at least 8 hex digits");
        }
        let fingerprints: BTreeSet<Digest> = table
            .keys
            .iter()
            .filter(|key| key.fingerprint.hex().starts_with(hex))
            .map(|key| key.fingerprint.clone())
            .collect();
        if fingerprints.len() > 1 {
            bail!(
                "key fingerprint {fingerprint_text:?} is ambiguous: it matches {} keys",
                fingerprints.len()
            );
        }
        let prefix = prefix.map(|prefix| prefix.trim_end_matches('/'));
        let (removed, kept): (Vec<TrustedKey>, Vec<TrustedKey>) =
            table.keys.into_iter().partition(|key| {
                fingerprints.contains(&key.fingerprint)
                    && prefix.is_none_or(|prefix| key.prefix == prefix)
            });
        if removed.is_empty() {
            bail!("no trusted key matches {fingerprint_text}");
        }
        table.keys = kept;
        write_atomically(&self.table_path(), &serde_json::to_vec_pretty(&table)?)?;
        Ok(removed)
    }

    fn signature_dir(&self, manifest_digest: &Digest) -> PathBuf {
        self.store
            .root()
            .join("signatures")
            .join(manifest_digest.hex())
    }

    /// Signs an image's manifest digest for `name`; returns where the
    /// signature was written.
    pub fn sign(
        &self,
        name: &str,
        manifest_digest: &Digest,
        key: &SigningKey,
    ) -> anyhow::Result<PathBuf> {
        let signature = key.sign(&signed_payload(name, manifest_digest));
        let key_fingerprint = fingerprint(&key.verifying_key());
        let record = ImageSignature {
            name: name.to_string(),
            manifest_digest: manifest_digest.clone(),
            key_fingerprint: key_fingerprint.clone(),
            signature: to_hex(&signature.to_bytes()),
        };
        let dir = self.signature_dir(manifest_digest);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let name_digest = Digest::of_bytes(name.as_bytes());
        let path = dir.join(format!(
            "{}-{}.json",
            key_fingerprint.short(),
            name_digest.short()
        ));
        write_atomically(&path, &serde_json::to_vec_pretty(&record)?)?;
        Ok(path)
    }

    pub fn signatures(&self, manifest_digest: &Digest) -> anyhow::Result<Vec<ImageSignature>> {
        let dir = self.signature_dir(manifest_digest);
        let mut signatures = Vec::new();
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(signatures);
        };
        for entry in entries.flatten() {
            let bytes = fs::read(entry.path())?;
            // A corrupt signature file is no signature, not a reason to fail.
            if let Ok(signature) = serde_json::from_slice::<ImageSignature>(&bytes) {
                signatures.push(signature);
            }
        }
        signatures.sort_by(|left, right| left.key_fingerprint.cmp(&right.key_fingerprint));
        Ok(signatures)
    }

    /// Checks that `manifest_digest`, run as `name`, carries a valid
    /// signature by a key trusted for `name`. Returns the signer's
    /// fingerprint.
    pub fn verify(&self, name: &str, manifest_digest: &Digest) -> anyhow::Result<Digest> {
        let trusted: Vec<TrustedKey> = self
            .keys()?
            .into_iter()
            .filter(|key| key.prefix == ROOT_PREFIX || name_has_prefix(name, &key.prefix))
            .collect();
        let signatures: Vec<ImageSignature> = self
            .signatures(manifest_digest)?
            .into_iter()
            .filter(|signature| {
                signature.name == name && &signature.manifest_digest == manifest_digest
            })
            .collect();
        if signatures.is_empty() {
            return Err(TrustError::Unsigned {
                name: name.to_string(),
                digest: manifest_digest.clone(),
            }
            .into());
        }
        if trusted.is_empty() {
            return Err(TrustError::NoTrustedKey {
                name: name.to_string(),
            }
            .into());
        }
        let payload = signed_payload(name, manifest_digest);
        let mut bad_signer = None;
        for signature in &signatures {
            let Some(key) = trusted
                .iter()
                .find(|key| key.fingerprint == signature.key_fingerprint)
            else {
                continue;
            };
            let verifying_key =
                VerifyingKey::from_public_key_pem(&key.public_key_pem).map_err(|_| {
                    anyhow::anyhow!("trusted key {} is corrupt in trust.json", key.fingerprint)
                })?;
            let valid = from_hex(&signature.signature)
                .and_then(|bytes| Signature::from_slice(&bytes).ok())
                .is_some_and(|bytes| verifying_key.verify(&payload, &bytes).is_ok());
            if valid {
                return Ok(key.fingerprint.clone());
            }
            bad_signer = Some(key.fingerprint.clone());
        }
        match bad_signer {
            Some(fingerprint) => Err(TrustError::BadSignature {
                name: name.to_string(),
                digest: manifest_digest.clone(),
                fingerprint,
            }
            .into()),
            None => Err(TrustError::UntrustedSigner {
                name: name.to_string(),
                digest: manifest_digest.clone(),
                signers: signatures
                    .iter()
                    .map(|signature| signature.key_fingerprint.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(from_hex(&to_hex(&bytes)).unwrap(), bytes);
        assert!(from_hex("abc").is_none());
        assert!(from_hex("zz").is_none());
    }

    #[test]
    fn signatures_verify_only_for_their_name_and_digest() {
        let data_dir = tempfile::tempdir().unwrap();
        let store = Store::open(data_dir.path()).unwrap();
        let trust = Trust::new(&store);
        let alice = SigningKey::from_bytes(&[7u8; 32]);
        let mallory = SigningKey::from_bytes(&[9u8; 32]);
        let digest = Digest::of_bytes(b"manifest");
        let other_digest = Digest::of_bytes(b"other manifest");

        let error = trust.verify("example.com/app", &digest).unwrap_err();
        assert!(error.to_string().contains("has no signature"), "{error}");

        trust.sign("example.com/app", &digest, &alice).unwrap();
        let error = trust.verify("example.com/app", &digest).unwrap_err();
        assert!(error.to_string().contains("no key is trusted"), "{error}");

        trust
            .add(Some("example.com/other"), &alice.verifying_key())
            .unwrap();
        let error = trust.verify("example.com/app", &digest).unwrap_err();
        assert!(error.to_string().contains("no key is trusted"), "{error}");

        trust
            .add(Some("example.com/"), &mallory.verifying_key())
            .unwrap();
        let error = trust.verify("example.com/app", &digest).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("signed only by keys not trusted"),
            "{error}"
        );

        trust
            .add(Some("example.com/app"), &alice.verifying_key())
            .unwrap();
        assert_eq!(
            trust.verify("example.com/app", &digest).unwrap(),
            fingerprint(&alice.verifying_key())
        );
        assert!(trust.verify("example.com/app", &other_digest).is_err());
        assert!(trust.verify("example.com/app2", &digest).is_err());

        // A signature file edited to claim another digest does not verify.
        let signature_path = trust
            .sign("example.com/app", &other_digest, &alice)
            .unwrap();
        let mut forged: ImageSignature =
            serde_json::from_slice(&fs::read(&signature_path).unwrap()).unwrap();
        forged.signature = to_hex(
            &mallory
                .sign(&signed_payload("example.com/app", &other_digest))
                .to_bytes(),
        );
        fs::write(&signature_path, serde_json::to_vec(&forged).unwrap()).unwrap();
        let error = trust.verify("example.com/app", &other_digest).unwrap_err();
        assert!(error.to_string().contains("does not verify"), "{error}");

        let removed = trust
            .remove(fingerprint(&alice.verifying_key()).hex(), None)
            .unwrap();
        assert_eq!(removed.len(), 2);
        assert!(trust.verify("example.com/app", &digest).is_err());
    }
}

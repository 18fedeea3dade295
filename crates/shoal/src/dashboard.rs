//! The web dashboard's login: on first start `shoal up` makes an admin
//! token for it, kept in `DATA_DIR/pki/dashboard-token` (mode 0600) and
//! accepted by the API's token authenticator beside `--token-auth-file`.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The dashboard's token and the file it is kept in.
pub struct DashboardToken {
    pub token: String,
    pub path: PathBuf,
}

/// The user the dashboard token names: a cluster administrator.
pub fn user() -> apiserver::User {
    apiserver::User {
        name: "shoal:dashboard-admin".to_string(),
        groups: vec![
            "system:masters".to_string(),
            "system:authenticated".to_string(),
        ],
    }
}

/// Reads the dashboard token from `pki_dir`, making it on first start: 32
/// random bytes from the kernel, in hex.
pub fn ensure_token(pki_dir: &Path) -> anyhow::Result<DashboardToken> {
    let path = pki_dir.join("dashboard-token");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => {
            // Whoever can read the file is the cluster's administrator.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot restrict {} to its owner", path.display()))?;
            return Ok(DashboardToken {
                token: text.trim().to_string(),
                path,
            });
        }
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read {}", path.display()));
        }
    }
    let mut random = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut random))
        .context("cannot read random bytes for the dashboard token")?;
    let token: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    let temporary = pki_dir.join("dashboard-token.tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("cannot create {}", temporary.display()))?;
    file.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, &path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(DashboardToken { token, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_token(dir.path()).unwrap();
        assert_eq!(first.token.len(), 64);
        assert!(first.token.chars().all(|c| c.is_ascii_hexdigit()));
        let mode = std::fs::metadata(&first.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = ensure_token(dir.path()).unwrap();
        assert_eq!(again.token, first.token);
        std::fs::set_permissions(&first.path, std::fs::Permissions::from_mode(0o644)).unwrap();
        ensure_token(dir.path()).unwrap();
        let mode = std::fs::metadata(&first.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "a widened file is restricted again");
        assert_ne!(
            ensure_token(tempfile::tempdir().unwrap().path())
                .unwrap()
                .token,
            first.token
        );
    }
}

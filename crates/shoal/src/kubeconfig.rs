//! `shoal kubeconfig`: a kubeconfig for another person or program, with a
//! client certificate the cluster CA signs (its common name the user, its
//! organizations the groups, as the API server reads them). It runs on a
//! server machine: the CA's key is in the data directory.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

#[derive(Args)]
pub struct KubeconfigArgs {
    /// Where shoal keeps its state (the CA is under `pki/`).
    #[arg(long, env = "SHOAL_DATA_DIR", default_value = "/var/lib/shoal")]
    data_dir: PathBuf,
    /// The user name the certificate carries.
    #[arg(long)]
    user: String,
    /// A group the user is in (repeatable).
    #[arg(long = "group")]
    groups: Vec<String>,
    /// The API's URL; by default the one in the admin kubeconfig `shoal up`
    /// wrote.
    #[arg(long)]
    server: Option<String>,
    /// Write the kubeconfig to this file (mode 0600) instead of stdout.
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
}

pub fn run(args: KubeconfigArgs) -> anyhow::Result<()> {
    if args.user.trim().is_empty() {
        anyhow::bail!("--user must not be empty");
    }
    let pki_dir = args.data_dir.join("pki");
    let server = match args.server {
        Some(server) => server,
        None => {
            let admin = args.data_dir.join("admin.kubeconfig");
            let text = std::fs::read_to_string(&admin).with_context(|| {
                format!(
                    "cannot read {} to find the API's address (give --server, or run on a server after `shoal up`)",
                    admin.display()
                )
            })?;
            text.lines()
                .find_map(|line| line.trim().strip_prefix("server: "))
                .map(str::to_string)
                .with_context(|| format!("{} names no server", admin.display()))?
        }
    };
    let groups: Vec<&str> = args.groups.iter().map(String::as_str).collect();
    let (ca_pem, issuer) = apiserver::pki::load_issuer(&pki_dir)
        .with_context(|| format!("cannot load the cluster CA from {}", pki_dir.display()))?;
    let (cert, key) = apiserver::pki::client_certificate(&issuer, &args.user, &groups)
        .context("cannot issue the client certificate")?;
    let kubeconfig = apiserver::pki::kubeconfig(&server, &ca_pem, &cert, &key);
    match args.output {
        Some(path) => apiserver::pki::write_file(&path, &kubeconfig, true)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{kubeconfig}"),
    }
    Ok(())
}

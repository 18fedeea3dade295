//! The runtime's command line: clap types for `image`, `trust`, `run`, `ps`,
//! `logs`, `stop` and `rm`, and the functions that carry them out. The
//! `shoal` binary flattens [`Command`] into its own subcommands.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};

use crate::container::cgroup::{self, Limits};
use crate::container::network::{self, PortMapping};
use crate::container::run::{self as launcher, StartError};
use crate::container::seccomp::Seccomp;
use crate::container::spec::{InitSpec, NetMode, Volume};
use crate::container::state::{ContainerState, Containers, Status, format_utc, now_unix_ms};
use crate::digest::Digest;
use crate::image::fetch;
use crate::image::import::{self, Source};
use crate::image::reference::ImageRef;
use crate::image::store::{Store, StoreError};
use crate::quantity;
use crate::trust::{self, Trust};

#[derive(Args, Clone, Debug)]
pub struct DataDirArg {
    /// Where shoal keeps its state (images under runtime/).
    #[arg(long, env = "SHOAL_DATA_DIR", default_value = "/var/lib/shoal")]
    pub data_dir: PathBuf,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
}

/// The runtime's subcommands, for flattening into a binary's own.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Import, fetch, list, inspect, sign and remove images.
    Image(ImageArgs),
    /// Manage the keys trusted to sign images.
    Trust(TrustArgs),
    /// Run a command in a new container.
    Run(Box<RunArgs>),
    /// List containers.
    Ps(PsArgs),
    /// Print a container's output.
    Logs(LogsArgs),
    /// Stop running containers (SIGTERM, then SIGKILL after a grace period).
    Stop(StopArgs),
    /// Remove containers.
    Rm(RmArgs),
}

/// Carries out one of the runtime's subcommands.
pub fn run_command(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Image(args) => run_image(args),
        Command::Trust(args) => run_trust(args),
        Command::Run(args) => run_run(*args),
        Command::Ps(args) => run_ps(args),
        Command::Logs(args) => run_logs(args),
        Command::Stop(args) => run_stop(args),
        Command::Rm(args) => run_rm(args),
    }
}

#[derive(Args, Debug)]
pub struct ImageArgs {
    #[command(flatten)]
    pub data: DataDirArg,
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Import an image: oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE.
    Import {
        source: String,
        /// The name to give the image, NAME[:TAG].
        #[arg(long)]
        name: Option<String>,
    },
    /// Fetch an image from a registry: [HOST/]NAME[:TAG][@sha256:DIGEST].
    #[command(alias = "pull")]
    Fetch {
        /// The image; the registry is the first component when it has a '.'
        /// or ':' or is localhost, else Docker Hub.
        reference: String,
        /// The name to give the image, NAME[:TAG] (default: the reference's).
        #[arg(long)]
        name: Option<String>,
        /// Talk plain http to the registry, not https (for a registry on a
        /// trusted network, such as one on loopback).
        #[arg(long)]
        insecure_registry: bool,
    },
    /// List images.
    #[command(alias = "ls")]
    List {
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Show an image's manifest, config and signatures as JSON.
    Inspect { image: String },
    /// Remove image names; blobs no other image or container uses are deleted.
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Delete blobs, layers and signatures no image or container uses.
    Gc,
    /// Sign an image (a detached ed25519 signature over its manifest digest).
    Sign {
        /// The image, by NAME[:TAG]; the signature vouches for NAME.
        image: String,
        /// The signer's private key (PEM, PKCS#8).
        #[arg(long)]
        key: PathBuf,
    },
}

pub fn run_image(args: ImageArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&args.data.data_dir)?;
    match args.command {
        ImageCommand::Import { source, name } => {
            let source = Source::parse(&source)?;
            let name = name.as_deref().map(ImageRef::parse).transpose()?;
            let (reference, digest) = import::import(&store, &source, name.as_ref())?;
            println!("imported {reference} {digest}");
        }
        ImageCommand::Fetch {
            reference,
            name,
            insecure_registry,
        } => {
            let options = fetch::FetchOptions {
                insecure_registry,
                name: name.as_deref().map(ImageRef::parse).transpose()?,
                progress: true,
                credentials: None,
            };
            let (reference, digest) = fetch::fetch(&store, &reference, &options)?;
            println!("fetched {reference} {digest}");
        }
        ImageCommand::List { output } => image_list(&store, output)?,
        ImageCommand::Inspect { image } => image_inspect(&store, &image)?,
        ImageCommand::Rm { images } => {
            let containers = Containers::open(store.root())?;
            for image in images {
                let (removed, report) = store
                    .remove(&image, || layers_in_use(&containers))
                    .map_err(explain_missing_image)?;
                for name in removed {
                    println!("untagged {name}");
                }
                if !report.removed_blobs.is_empty() {
                    println!(
                        "deleted {} blobs ({} bytes)",
                        report.removed_blobs.len(),
                        report.freed_bytes
                    );
                }
            }
        }
        ImageCommand::Gc => {
            let containers = Containers::open(store.root())?;
            let report = store.gc(|| layers_in_use(&containers))?;
            println!(
                "removed {} blobs and {} unpacked layers, {} bytes freed",
                report.removed_blobs.len(),
                report.removed_layers.len(),
                report.freed_bytes
            );
        }
        ImageCommand::Sign { image, key } => {
            let signing_key = trust::read_private_key(&key)?;
            let reference = ImageRef::parse(&image).context("sign an image by its NAME[:TAG]")?;
            let digest = store
                .resolve(&reference.to_string())
                .map_err(explain_missing_image)?;
            // Only an intact image is worth vouching for.
            let loaded = store.load(&digest)?;
            for layer in &loaded.manifest.layers {
                store.verify_blob(&layer.digest)?;
            }
            Trust::new(&store).sign(&reference.name, &digest, &signing_key)?;
            println!(
                "signed {} ({digest}) with key {}",
                reference.name,
                trust::fingerprint(&signing_key.verifying_key())
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn explain_missing_image(error: anyhow::Error) -> anyhow::Error {
    match error.downcast_ref::<StoreError>() {
        Some(StoreError::ImageNotFound(name)) => {
            anyhow::anyhow!(
                "image {name} not found: import it with `shoal image import` or fetch it with `shoal image fetch`"
            )
        }
        _ => error,
    }
}

fn layers_in_use(containers: &Containers) -> anyhow::Result<BTreeSet<Digest>> {
    let mut in_use = BTreeSet::new();
    for state in containers.list()? {
        in_use.insert(state.manifest_digest);
        in_use.extend(state.layers);
    }
    Ok(in_use)
}

#[derive(serde::Serialize)]
struct ImageRow {
    name: String,
    tag: String,
    digest: Digest,
    size_bytes: u64,
    created: Option<String>,
}

fn image_list(store: &Store, output: OutputFormat) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for (reference, digest) in store.names()? {
        let manifest_len = std::fs::metadata(store.blob_path(&digest))
            .map(|metadata| metadata.len())
            .unwrap_or(0);
        // A damaged image still lists; `inspect` and `run` say what is wrong.
        let (size_bytes, created) = match store.load(&digest) {
            Ok(image) => (image.size_bytes(manifest_len), image.config.created.clone()),
            Err(_) => (manifest_len, None),
        };
        rows.push(ImageRow {
            name: reference.name,
            tag: reference.tag,
            digest,
            size_bytes,
            created,
        });
    }
    let mut stdout = std::io::stdout().lock();
    match output {
        OutputFormat::Json => writeln!(stdout, "{}", serde_json::to_string_pretty(&rows)?)?,
        OutputFormat::Table => {
            let name_width = rows
                .iter()
                .map(|row| row.name.len())
                .max()
                .unwrap_or(0)
                .max(4);
            let tag_width = rows
                .iter()
                .map(|row| row.tag.len())
                .max()
                .unwrap_or(0)
                .max(3);
            writeln!(
                stdout,
                "{:name_width$}  {:tag_width$}  {:19}  {:>10}  CREATED",
                "NAME", "TAG", "DIGEST", "SIZE"
            )?;
            for row in rows {
                writeln!(
                    stdout,
                    "{:name_width$}  {:tag_width$}  sha256:{}  {:>10}  {}",
                    row.name,
                    row.tag,
                    row.digest.short(),
                    human_size(row.size_bytes),
                    row.created.as_deref().unwrap_or("-")
                )?;
            }
        }
    }
    Ok(())
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit_idx = 0;
    while value >= 1024.0 && unit_idx + 1 < UNITS.len() {
        value /= 1024.0;
        unit_idx += 1;
    }
    if unit_idx == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit_idx])
    }
}

fn image_inspect(store: &Store, image: &str) -> anyhow::Result<()> {
    let digest = store.resolve(image).map_err(explain_missing_image)?;
    let loaded = store.load(&digest)?;
    let signatures = Trust::new(store).signatures(&digest)?;
    let manifest_len = std::fs::metadata(store.blob_path(&digest))
        .map(|metadata| metadata.len())
        .unwrap_or(0);
    let document = serde_json::json!({
        "names": loaded.names.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "digest": digest,
        "size_bytes": loaded.size_bytes(manifest_len),
        "manifest": loaded.manifest,
        "config": loaded.config,
        "signatures": signatures.iter().map(|signature| serde_json::json!({
            "name": signature.name,
            "key": signature.key_fingerprint,
        })).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&document)?);
    Ok(())
}

#[derive(Args, Debug)]
pub struct TrustArgs {
    #[command(flatten)]
    pub data: DataDirArg,
    #[command(subcommand)]
    pub command: TrustCommand,
}

#[derive(Subcommand, Debug)]
pub enum TrustCommand {
    /// Trust a public key (PEM) to sign images whose names start with --prefix.
    Add {
        #[arg(long, required_unless_present = "root", conflicts_with = "root")]
        prefix: Option<String>,
        /// Trust the key for every image name.
        #[arg(long)]
        root: bool,
        key_file: PathBuf,
    },
    /// List trusted keys.
    #[command(alias = "ls")]
    List {
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Stop trusting a key (by fingerprint), for one prefix or all.
    Rm {
        fingerprint: String,
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Make a new ed25519 key pair: FILE (private, mode 0600) and FILE.pub.
    Keygen { file: PathBuf },
}

pub fn run_trust(args: TrustArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&args.data.data_dir)?;
    let trust = Trust::new(&store);
    match args.command {
        TrustCommand::Add {
            prefix,
            root: _,
            key_file,
        } => {
            let key = trust::read_public_key(&key_file)?;
            let entry = trust.add(prefix.as_deref(), &key)?;
            println!("trusted key {} for {}", entry.fingerprint, entry.prefix);
        }
        TrustCommand::List { output } => {
            let keys = trust.keys()?;
            match output {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&keys)?),
                OutputFormat::Table => {
                    let width = keys
                        .iter()
                        .map(|key| key.prefix.len())
                        .max()
                        .unwrap_or(0)
                        .max(6);
                    println!("{:width$}  KEY", "PREFIX");
                    for key in keys {
                        println!("{:width$}  {}", key.prefix, key.fingerprint);
                    }
                }
            }
        }
        TrustCommand::Rm {
            fingerprint,
            prefix,
        } => {
            for entry in trust.remove(&fingerprint, prefix.as_deref())? {
                println!("removed key {} for {}", entry.fingerprint, entry.prefix);
            }
        }
        TrustCommand::Keygen { file } => {
            let (fingerprint, public_path) = trust::generate_key(&file)?;
            println!(
                "wrote {} and {} (key {fingerprint})",
                file.display(),
                public_path.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `--security-opt` set.
struct SecurityOptions {
    seccomp: Seccomp,
    no_new_privileges: bool,
}

impl SecurityOptions {
    fn parse(options: &[String]) -> anyhow::Result<SecurityOptions> {
        let mut parsed = SecurityOptions {
            seccomp: Seccomp::RuntimeDefault,
            no_new_privileges: true,
        };
        for option in options {
            // docker also takes the older `key:value`.
            let (key, value) = option
                .split_once('=')
                .or_else(|| option.split_once(':'))
                .unwrap_or((option.as_str(), ""));
            match (key, value) {
                ("seccomp", "") => {
                    bail!("invalid --security-opt {option:?}: seccomp=unconfined or seccomp=PATH")
                }
                ("seccomp", value) => parsed.seccomp = Seccomp::from_option(value)?,
                ("no-new-privileges", "" | "true") => parsed.no_new_privileges = true,
                ("no-new-privileges", "false") => parsed.no_new_privileges = false,
                _ => bail!(
                    "invalid --security-opt {option:?}: expected seccomp=unconfined, seccomp=PATH or no-new-privileges[=false]"
                ),
            }
        }
        Ok(parsed)
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub data: DataDirArg,
    /// The container's name (default: the image's, with a random suffix).
    #[arg(long)]
    pub name: Option<String>,
    /// Run in the background and print the container's id.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Networking: default (an address on shoal's bridge), none (loopback
    /// only) or host (the host's stack).
    #[arg(long, value_enum, default_value = "default")]
    pub net: NetMode,
    /// Publish a container port on the host, HOSTPORT:CONTAINERPORT[/tcp|/udp]
    /// (--net=default only).
    #[arg(long, short = 'p', value_name = "HOSTPORT:CONTAINERPORT", value_parser = parse_port)]
    pub publish: Vec<PortMapping>,
    /// CPU limit, a Kubernetes quantity: 750m is three quarters of a core.
    #[arg(long, value_parser = quantity::parse_cpu_millis)]
    pub cpu: Option<u64>,
    /// Memory limit, a Kubernetes quantity: 128M, 1Gi.
    #[arg(long, value_parser = quantity::parse_memory_bytes)]
    pub memory: Option<u64>,
    /// Set an environment variable, KEY=VALUE (KEY alone takes shoal's value).
    #[arg(long, short = 'e')]
    pub env: Vec<String>,
    /// Bind-mount a host path, HOST:CONTAINER[:ro].
    #[arg(long, short = 'v', value_parser = parse_volume)]
    pub volume: Vec<Volume>,
    /// The container's hostname (default: its short id).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Run as this user: NAME or UID, optionally :GROUP or :GID.
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// The working directory inside the container.
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,
    /// Mount the container's root filesystem read-only.
    #[arg(long)]
    pub readonly_rootfs: bool,
    /// Replace the image's entrypoint.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Security options, as docker takes them: `seccomp=unconfined`,
    /// `seccomp=PATH` (a profile in Docker's JSON format; default: shoal's
    /// RuntimeDefault), `no-new-privileges=false` (on by default).
    #[arg(long, value_name = "OPTION")]
    pub security_opt: Vec<String>,
    /// The most processes and threads the container may have (a fork past
    /// it fails); 0 or -1 for no limit.
    #[arg(long, default_value_t = cgroup::DEFAULT_PIDS_LIMIT as i64, allow_negative_numbers = true)]
    pub pids_limit: i64,
    /// Checks to skip, comma-separated: `image` runs images without a trusted
    /// signature (a corrupt image is refused regardless).
    #[arg(long, value_delimiter = ',', value_parser = ["image"])]
    pub insecure_options: Vec<String>,
    /// The image: NAME[:TAG] or a digest.
    pub image: String,
    /// The command and its arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

fn parse_volume(text: &str) -> Result<Volume, String> {
    Volume::parse(text).map_err(|error| error.to_string())
}

fn parse_port(text: &str) -> Result<PortMapping, String> {
    PortMapping::parse(text).map_err(|error| error.to_string())
}

pub fn run_run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&args.data.data_dir)?;
    // Until the container is recorded, nothing may sweep its image away.
    let sweep_guard = store.sweep_guard(false)?;
    let manifest_digest = store.resolve(&args.image).map_err(explain_missing_image)?;
    let image = store.load(&manifest_digest)?;
    // A tampered layer is refused whatever the options.
    for layer in &image.manifest.layers {
        store
            .verify_blob(&layer.digest)
            .with_context(|| format!("image {} is corrupt", args.image))?;
        store.unpack_layer(layer, None)?;
    }
    if !args.insecure_options.iter().any(|option| option == "image") {
        verify_trust(&store, &args.image, &image)?;
    }
    let mount_point_layer = store.mount_point_layer()?;

    let config = &image.config.config;
    let entrypoint = match &args.entrypoint {
        Some(entrypoint) => vec![entrypoint.clone()],
        None => config.entrypoint.clone().unwrap_or_default(),
    };
    let cmd = if !args.command.is_empty() {
        args.command.clone()
    } else if args.entrypoint.is_some() {
        Vec::new()
    } else {
        config.cmd.clone().unwrap_or_default()
    };
    let command: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if command.is_empty() {
        bail!(
            "image {} has no command: give one after the image name",
            args.image
        );
    }

    let id = format!("{:032x}", rand::random::<u128>());
    let name = match args.name {
        Some(name) => {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
            {
                bail!("invalid container name {name:?}: use letters, digits, '.', '_' and '-'");
            }
            name
        }
        None => {
            let base = image.names.first().map(|reference| {
                reference
                    .name
                    .rsplit('/')
                    .next()
                    .unwrap_or("app")
                    .to_string()
            });
            format!(
                "{}-{}",
                base.unwrap_or_else(|| "container".to_string()),
                &id[..6]
            )
        }
    };
    let hostname = args
        .hostname
        .clone()
        .unwrap_or_else(|| id[..12].to_string());
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set_env = |key: String, value: String| {
        env.retain(|(existing, _)| existing != &key);
        env.push((key, value));
    };
    set_env(
        "PATH".into(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    );
    set_env("HOSTNAME".into(), hostname.clone());
    for entry in config.env.iter().flatten() {
        if let Some((key, value)) = entry.split_once('=') {
            set_env(key.to_string(), value.to_string());
        }
    }
    for entry in &args.env {
        match entry.split_once('=') {
            Some((key, value)) if !key.is_empty() => set_env(key.to_string(), value.to_string()),
            Some(_) => bail!("invalid --env {entry:?}: expected KEY=VALUE"),
            None => {
                if let Ok(value) = std::env::var(entry) {
                    set_env(entry.clone(), value);
                }
            }
        }
    }
    let workdir = args
        .workdir
        .clone()
        .or_else(|| config.working_dir.clone())
        .filter(|dir| !dir.is_empty())
        .unwrap_or_else(|| "/".into());
    if !workdir.starts_with('/') {
        bail!("invalid --workdir {workdir:?}: it must be absolute");
    }
    for volume in &args.volume {
        if !volume.host_path.exists() {
            bail!(
                "volume {} does not exist on the host",
                volume.host_path.display()
            );
        }
    }
    if !args.publish.is_empty() && args.net != NetMode::Default {
        bail!("--publish needs --net=default: the container has no address to publish to");
    }
    let security = SecurityOptions::parse(&args.security_opt)?;
    let limits = Limits {
        cpu_millis: args.cpu,
        memory_bytes: args.memory,
        cpu_shares: None,
        pids_max: u64::try_from(args.pids_limit).ok().filter(|max| *max > 0),
        restrict_devices: true,
    };

    let containers = Containers::open(store.root())?;
    let mut state = ContainerState {
        id: id.clone(),
        name,
        image: args.image.clone(),
        manifest_digest: manifest_digest.clone(),
        layers: image
            .manifest
            .layers
            .iter()
            .map(|layer| layer.digest.clone())
            .collect(),
        command: command.clone(),
        created_unix_ms: now_unix_ms(),
        status: Status::Created,
        pid: None,
        pid_start_ticks: None,
        exit_code: None,
        oom_killed: false,
        finished_unix_seconds: None,
        cgroups: Vec::new(),
        memory_limit_bytes: args.memory,
        detached: args.detach,
        network: None,
        started_unix_ms: None,
        finished_unix_ms: None,
        exit_signal: None,
        start_error: None,
        pod: None,
        supervisor_pid: None,
        supervisor_start_ticks: None,
    };
    {
        // The lock keeps names unique and keeps `image gc` from deleting
        // the layers between this check and the container's record.
        let _lock = store.lock()?;
        containers.create(&state)?;
    }
    drop(sweep_guard);
    state.cgroups = match cgroup::create(&id, &limits) {
        Ok(dirs) => dirs,
        Err(error) => {
            let _ = containers.delete(&id);
            return Err(error);
        }
    };
    if args.net == NetMode::Default {
        let attached = network::attach(store.root(), &id, &state.name, &args.publish);
        match attached {
            Ok(attachment) => state.network = Some(attachment),
            Err(error) => {
                cgroup::remove(&state.cgroups);
                let _ = containers.delete(&id);
                return Err(error);
            }
        }
    }
    if let Err(error) = containers.save(&state) {
        launcher::release_network(&containers, &state);
        cgroup::remove(&state.cgroups);
        let _ = containers.delete(&id);
        return Err(error);
    }
    let mut spec = InitSpec {
        image_name: args.image.clone(),
        layers_root: store.layers_root(),
        layers: image
            .manifest
            .layers
            .iter()
            .rev()
            .map(|layer| layer.digest.hex().to_string())
            .collect(),
        mount_point_layer: Some(mount_point_layer),
        container_dir: containers.dir(&id),
        hostname,
        net: args.net,
        network: state.network.clone(),
        cgroups: state.cgroups.clone(),
        volumes: args.volume.clone(),
        read_only_rootfs: args.readonly_rootfs,
        args: command,
        env,
        workdir,
        user: args
            .user
            .clone()
            .or_else(|| config.user.clone())
            .unwrap_or_default(),
        status_fd: -1,
        pod: None,
        privileged: false,
        capabilities_add: Vec::new(),
        capabilities_drop: Vec::new(),
        supplemental_groups: Vec::new(),
        stdin: false,
        stdin_once: false,
        terminal: false,
        seccomp: security.seccomp,
        allow_privilege_escalation: !security.no_new_privileges,
    };
    let outcome = if args.detach {
        launcher::run_detached(&args.data.data_dir, &containers, &state, &spec).map(|()| {
            println!("{id}");
            ExitCode::SUCCESS
        })
    } else {
        launcher::run_foreground(&containers, &mut state, &mut spec, args.rm)
    };
    match outcome {
        Ok(code) => Ok(code),
        // A container that could not start is reported with its own exit
        // code (125, 126 or 127, as docker has them).
        Err(error) => match error.downcast_ref::<StartError>() {
            Some(start) => {
                eprintln!("error: {}", start.message);
                Ok(ExitCode::from(start.code))
            }
            None => Err(error),
        },
    }
}

/// Checks the image carries a valid signature, from a trusted key, for the
/// name it is run by (any of its names when run by digest).
pub(crate) fn verify_trust(
    store: &Store,
    image_text: &str,
    image: &crate::image::store::Image,
) -> anyhow::Result<()> {
    let trust = Trust::new(store);
    let names: Vec<String> = match ImageRef::parse(image_text) {
        Ok(reference) if image.names.contains(&reference) => vec![reference.name],
        _ => image
            .names
            .iter()
            .map(|reference| reference.name.clone())
            .collect(),
    };
    let mut first_error = None;
    for name in &names {
        match trust.verify(name, &image.manifest_digest) {
            Ok(_) => return Ok(()),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| {
        anyhow::anyhow!("image {image_text} has no name to check signatures for: run it by name, or with --insecure-options=image")
    }))
}

#[derive(Args, Debug)]
pub struct PsArgs {
    #[command(flatten)]
    pub data: DataDirArg,
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(serde::Serialize)]
struct ContainerRow<'state> {
    id: &'state str,
    name: &'state str,
    image: &'state str,
    command: &'state [String],
    created: String,
    status: String,
    pid: Option<i32>,
    exit_code: Option<i32>,
    /// The container's address on shoal's network, while it runs.
    address: Option<String>,
    ports: Vec<String>,
}

pub fn run_ps(args: PsArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&args.data.data_dir)?;
    let states = Containers::open(store.root())?.list()?;
    let rows: Vec<ContainerRow<'_>> = states
        .iter()
        .map(|state| ContainerRow {
            id: &state.id,
            name: &state.name,
            image: &state.image,
            command: &state.command,
            created: format_utc(state.created_unix_ms / 1000),
            status: state.status_text(),
            pid: state.pid.filter(|_| state.is_running()),
            exit_code: state.exit_code,
            address: state
                .network
                .as_ref()
                .filter(|_| state.is_running())
                .map(|attachment| attachment.address.to_string()),
            ports: state
                .network
                .iter()
                .flat_map(|attachment| &attachment.ports)
                .map(ToString::to_string)
                .collect(),
        })
        .collect();
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        OutputFormat::Table => {
            let name_width = rows
                .iter()
                .map(|row| row.name.len())
                .max()
                .unwrap_or(0)
                .max(4);
            let image_width = rows
                .iter()
                .map(|row| row.image.len())
                .max()
                .unwrap_or(0)
                .max(5);
            println!(
                "{:12}  {:name_width$}  {:image_width$}  {:20}  {:20}  {:15}  COMMAND",
                "ID", "NAME", "IMAGE", "CREATED", "STATUS", "ADDRESS"
            );
            for row in rows {
                let mut command = row.command.join(" ");
                if command.len() > 40 {
                    command.truncate(37);
                    command.push_str("...");
                }
                println!(
                    "{:12}  {:name_width$}  {:image_width$}  {:20}  {:20}  {:15}  {command}",
                    &row.id[..12],
                    row.name,
                    row.image,
                    row.created,
                    row.status,
                    row.address.as_deref().unwrap_or("-")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    #[command(flatten)]
    pub data: DataDirArg,
    /// The container's name or id.
    pub container: String,
}

pub fn run_logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&args.data.data_dir)?;
    let containers = Containers::open(store.root())?;
    let state = containers.find(&args.container)?;
    let log_path = containers.dir(&state.id).join("log");
    match std::fs::File::open(&log_path) {
        Ok(mut log) => {
            std::io::copy(&mut log, &mut std::io::stdout().lock())?;
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read {}", log_path.display()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct StopArgs {
    #[command(flatten)]
    pub data: DataDirArg,
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(long, short = 't', default_value_t = 10)]
    pub time: u64,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn run_stop(args: StopArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&args.data.data_dir)?;
    let containers = Containers::open(store.root())?;
    for text in &args.containers {
        let state = containers.find(text)?;
        launcher::stop(&containers, &state, Duration::from_secs(args.time))?;
        println!("{}", state.name);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct RmArgs {
    #[command(flatten)]
    pub data: DataDirArg,
    /// Stop running containers (SIGKILL) before removing them.
    #[arg(long, short = 'f')]
    pub force: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn run_rm(args: RmArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&args.data.data_dir)?;
    let containers = Containers::open(store.root())?;
    for text in &args.containers {
        let state = containers.find(text)?;
        if args.force {
            launcher::stop(&containers, &state, Duration::ZERO)?;
        }
        let state = containers.load(&state.id)?;
        launcher::remove(&containers, &state)?;
        println!("{}", state.name);
    }
    Ok(ExitCode::SUCCESS)
}

/// Used by the data-dir default so tests can see what it is.
pub fn default_data_dir() -> &'static Path {
    Path::new("/var/lib/shoal")
}

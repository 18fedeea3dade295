//! `shoal image scan` and `shoal vulndb`: the OS packages in an image and
//! the known vulnerabilities in them, from the scanner crate. `image`
//! belongs to the runtime's command line, which cannot depend on the
//! scanner, so `scan` is added to it here, at parse time.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{ArgMatches, Args, FromArgMatches, Subcommand};
use runtime::cli::{DataDirArg, OutputFormat};
use runtime::image::import::Source;
use runtime::image::store::Store;
use scanner::index::{self, ImageIndex, LayerCache};
use scanner::matcher;
use scanner::policy::{ScanPolicy, Verdict};
use scanner::report;
use scanner::severity::Severity;
use scanner::vulndb::VulnDb;

#[derive(Args, Debug)]
pub struct ScanArgs {
    /// The image: NAME[:TAG] or a digest in the content store, or
    /// oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE.
    pub image: String,
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// Exit with status 1 when a vulnerability at or above this severity
    /// (negligible, low, medium, high, critical) is found.
    #[arg(long)]
    pub fail_on: Option<Severity>,
    /// Warn when the vulnerability data was imported longer ago than this.
    #[arg(long, default_value = "5d", value_parser = humantime::parse_duration)]
    pub max_db_age: Duration,
}

#[derive(Args, Debug)]
pub struct VulndbArgs {
    #[command(flatten)]
    pub data: DataDirArg,
    #[command(subcommand)]
    pub command: VulndbCommand,
}

#[derive(Subcommand, Debug)]
pub enum VulndbCommand {
    /// Load advisories: OSV JSON files, zips of them, or the Debian Security
    /// Tracker's JSON. Each file is imported whole or not at all.
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// The sources imported, their advisory counts and age.
    Status {
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
}

/// Prints, ignoring a closed pipe (`shoal image scan X | head`).
fn emit(text: &str) -> anyhow::Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => Ok(result?),
    }
}

fn now_unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Adds `scan` to the runtime's `image` subcommand, and `--scan-fail-on`
/// to its `run`.
pub fn add_to(command: clap::Command) -> clap::Command {
    command
        .mut_subcommand("image", |image| {
            image.subcommand(ScanArgs::augment_args(clap::Command::new("scan").about(
                "List an image's OS and packages (from the content store, or an OCI layout or archive)",
            )))
        })
        .mut_subcommand("run", |run| {
            run.arg(
                clap::Arg::new(SCAN_FAIL_ON)
                    .long("scan-fail-on")
                    .value_name("SEVERITY")
                    .value_parser(clap::value_parser!(Severity))
                    .help("Refuse to run the image when its scan finds a vulnerability at or above this severity (negligible, low, medium, high, critical); needs `shoal vulndb import` data"),
            )
        })
}

/// The id of `run --scan-fail-on`.
const SCAN_FAIL_ON: &str = "scan_fail_on";

/// `run --scan-fail-on`: scans the image first and refuses it, or lets the
/// runtime's `run` go on (`None`).
fn check_run(run_matches: &ArgMatches) -> Option<ExitCode> {
    let fail_on = *run_matches.get_one::<Severity>(SCAN_FAIL_ON)?;
    let data_dir = run_matches.get_one::<PathBuf>("data_dir")?;
    let image = run_matches.get_one::<String>("image")?;
    let policy = ScanPolicy::new(data_dir, fail_on);
    let checked = Store::open(data_dir)
        .map_err(|error| format!("{error:#}"))
        .and_then(|store| {
            policy
                .check(&store, image, image)
                .map_err(|error| error.to_string())
        });
    match checked {
        Ok(Verdict::Allowed { warnings, .. }) => {
            for warning in warnings {
                eprintln!("warning: {warning}");
            }
            None
        }
        Ok(Verdict::Refused(refusal)) => {
            eprintln!("error: refused by --scan-fail-on {fail_on}: {refusal}");
            Some(ExitCode::FAILURE)
        }
        Err(message) => {
            eprintln!("error: {message}");
            Some(ExitCode::FAILURE)
        }
    }
}

/// Runs `image scan` when that is what was asked, or refuses a `run` by
/// its `--scan-fail-on`; `None` otherwise.
pub fn dispatch(matches: &ArgMatches) -> Option<ExitCode> {
    if let ("run", run_matches) = matches.subcommand()? {
        return check_run(run_matches);
    }
    let ("image", image_matches) = matches.subcommand()? else {
        return None;
    };
    let ("scan", scan_matches) = image_matches.subcommand()? else {
        return None;
    };
    let result = ScanArgs::from_arg_matches(scan_matches)
        .map_err(anyhow::Error::from)
        .and_then(|args| {
            let data_dir = image_matches
                .get_one::<PathBuf>("data_dir")
                .context("the data directory is unset")?;
            run_scan(data_dir, &args)
        });
    Some(match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    })
}

fn index_image(data_dir: &Path, image: &str) -> anyhow::Result<ImageIndex> {
    let cache = LayerCache::open(data_dir);
    let is_path = ["oci:", "oci-archive:", "docker-archive:"]
        .iter()
        .any(|transport| image.starts_with(transport));
    let index = if is_path {
        let source = Source::parse(image)?;
        index::index_image_source(image, &source, &cache)?
    } else {
        let store = Store::open(data_dir)?;
        index::index_stored_image(&store, image, &cache)?
    };
    Ok(index)
}

pub fn run_scan(data_dir: &Path, args: &ScanArgs) -> anyhow::Result<ExitCode> {
    let index = index_image(data_dir, &args.image)?;
    for warning in &index.warnings {
        eprintln!("warning: {warning}");
    }
    let db = VulnDb::open(data_dir)?;
    let Some(oldest_import) = db.oldest_import_unix_seconds()? else {
        // No vulnerability data: the package listing is the report.
        if args.fail_on.is_some() {
            anyhow::bail!(
                "--fail-on needs vulnerability data: import some with `shoal vulndb import`"
            );
        }
        match args.output {
            OutputFormat::Table => emit(&report::package_table(&index))?,
            OutputFormat::Json => emit(&format!("{}\n", serde_json::to_string_pretty(&index)?))?,
        }
        return Ok(ExitCode::SUCCESS);
    };
    let age = Duration::from_secs(now_unix_seconds().saturating_sub(oldest_import));
    if age > args.max_db_age {
        eprintln!(
            "warning: the vulnerability data is {} old (more than --max-db-age {}): run `shoal vulndb import` with newer files",
            humantime::format_duration(Duration::from_secs(age.as_secs() / 3600 * 3600)),
            humantime::format_duration(args.max_db_age)
        );
    }
    let matched = matcher::match_image(&index, &db)?;
    for warning in &matched.warnings {
        eprintln!("warning: {warning}");
    }
    match args.output {
        OutputFormat::Table => emit(&report::findings_table(&index, &matched))?,
        OutputFormat::Json => {
            let document = serde_json::json!({
                "image": &index,
                "matches": &matched,
                "update_actions": report::update_actions(&matched),
            });
            emit(&format!("{}\n", serde_json::to_string_pretty(&document)?))?;
        }
    }
    if let Some(threshold) = args.fail_on
        && matched.findings.iter().any(|f| f.severity >= threshold)
    {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `shoal vulndb`.
pub fn run_vulndb(args: VulndbArgs) -> anyhow::Result<ExitCode> {
    let db = VulnDb::open(&args.data.data_dir)?;
    match args.command {
        VulndbCommand::Import { files } => {
            let mut n_failed = 0;
            for file in files {
                match db.import_file(&file) {
                    Ok(imported) => emit(&format!(
                        "imported {}: {} advisories ({} package records) from {}\n",
                        imported.source,
                        imported.n_advisories,
                        imported.n_records,
                        file.display()
                    ))?,
                    Err(error) => {
                        n_failed += 1;
                        eprintln!("error: {error} (nothing imported from it)");
                    }
                }
            }
            Ok(if n_failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        VulndbCommand::Status { output } => {
            let statuses = db.status()?;
            match output {
                OutputFormat::Json => {
                    emit(&format!("{}\n", serde_json::to_string_pretty(&statuses)?))?
                }
                OutputFormat::Table => {
                    let now = now_unix_seconds();
                    let rows: Vec<Vec<String>> = statuses
                        .iter()
                        .map(|status| {
                            let age = Duration::from_secs(
                                now.saturating_sub(status.imported_at_unix_seconds) / 60 * 60,
                            );
                            vec![
                                status.source.clone(),
                                status.n_advisories.to_string(),
                                if age.is_zero() {
                                    "<1m".to_string()
                                } else {
                                    humantime::format_duration(age).to_string()
                                },
                                status.last_file.clone(),
                            ]
                        })
                        .collect();
                    emit(&report::columns(
                        &["SOURCE", "ADVISORIES", "AGE", "LAST FILE"],
                        &rows,
                    ))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

//! `shoal template`: confd's command over the `template` crate; parses the
//! flags, reaches the store through `client::Remote`, and turns SIGINT and
//! SIGTERM into the watch's shutdown.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

/// The flags are confd's and etcdctl's, so their scripts carry over.
#[derive(Args)]
#[command(after_help = "\
Example: an nginx upstream from keys and from the Service default/web:

  $ etcdctl put /app/name web
  $ etcdctl put /app/upstream/a 10.0.0.1:80
  $ cat nginx.tmpl
  upstream {{getv \"/app/name\"}} {
  {{- range getvs \"/app/upstream/*\"}}
      server {{.}};
  {{- end}}
  {{- range endpoints \"default/web\" \"http\"}}
      server {{.IP}}:{{.Port}};
  {{- end}}
  }
  $ shoal template --template-file nginx.tmpl --dest /etc/nginx/conf.d/app.conf \\
      --keys /app --check-cmd 'nginx -t -c {{.src}}' --reload-cmd 'nginx -s reload' --watch

Functions: confd's (get gets getv getvs exists ls lsdir json jsonArray base dir
split join toUpper toLower contains replace trimSuffix getenv map reverse
parseBool atoi add sub mul div mod seq fileExists lookupIP), Go's built-ins
(printf eq ne lt le gt ge len index and or not print println), and:
  endpoints \"NS/NAME\" [\"PORT\"]  ready endpoints of a Service: .IP .Port .PortName
                                .Protocol .NodeName .Hostname .PodName
  service \"NS/NAME\"             .ClusterIP .ClusterIPs .Type .ExternalIPs .Ports

A render error names the template line; the old file is then kept.")]
pub struct TemplateArgs {
    /// The template, in Go's text/template language (confd's templates work
    /// unchanged).
    #[arg(long, value_name = "FILE")]
    template_file: PathBuf,
    /// The file to write. Replaced by a rename, keeping its owner and mode
    /// (0644 when new).
    #[arg(long, value_name = "FILE")]
    dest: PathBuf,
    /// The store: etcd v3 endpoints (shoal or etcd), comma-separated.
    #[arg(
        long,
        value_name = "URLS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    endpoints: Vec<String>,
    /// Run on the staged file before it replaces the destination; `{{.src}}`
    /// is its path. When it fails the destination is left as it was.
    #[arg(long, value_name = "CMD")]
    check_cmd: Option<String>,
    /// Run after the destination was replaced.
    #[arg(long, value_name = "CMD")]
    reload_cmd: Option<String>,
    /// Key prefixes the template reads (e.g. /app); keys elsewhere are not
    /// seen. Services named in `endpoints`/`service` are read whatever these are.
    #[arg(long, value_name = "PREFIX", num_args = 1..)]
    keys: Vec<String>,
    /// Render once and exit; non-zero when anything failed. The default.
    #[arg(long, conflicts_with = "watch")]
    onetime: bool,
    /// Render again whenever the keys or Services read change, until SIGINT
    /// or SIGTERM; failures are logged and retried.
    #[arg(long)]
    watch: bool,
    #[arg(long, value_enum, default_value_t = crate::LogLevel::Info)]
    pub log_level: crate::LogLevel,
}

pub fn run(args: TemplateArgs) -> ExitCode {
    match run_inner(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(args: TemplateArgs) -> anyhow::Result<ExitCode> {
    let settings = template::Settings {
        template_file: args.template_file,
        dest: args.dest,
        prefixes: args.keys,
        commands: template::Commands {
            check: args.check_cmd,
            reload: args.reload_cmd,
        },
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // tonic's channel starts its tasks on the runtime it is made in.
        let remote = client::Remote::new(&args.endpoints).context("invalid --endpoints")?;
        let templater = template::Templater::new(Arc::new(remote), settings)?;
        if args.watch {
            templater
                .watch(async {
                    if let Err(error) = crate::serve::wait_for_signal().await {
                        tracing::error!(%error, "cannot wait for signals");
                        std::future::pending::<()>().await;
                    }
                })
                .await;
            return Ok(ExitCode::SUCCESS);
        }
        let synced = match templater.sync().await {
            Ok(synced) => synced,
            Err(template::TemplateError::Store(error)) => {
                anyhow::bail!(
                    "cannot read the store at {}: {error}",
                    args.endpoints.join(",")
                )
            }
            Err(error) => return Err(error.into()),
        };
        let dest = templater.settings().dest.display().to_string();
        match synced.outcome {
            template::Outcome::Replaced => tracing::info!(dest, "updated"),
            template::Outcome::Unchanged => tracing::info!(dest, "unchanged"),
        }
        Ok(ExitCode::SUCCESS)
    })
}

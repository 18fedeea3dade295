//! `shoal template` (confd's role): a configuration file rendered from store
//! keys and from Services' endpoints, staged beside its destination, checked,
//! moved into place atomically, then the reload command; once (`--onetime`)
//! or on every change (`--watch`).
//!
//! # Template language
//!
//! Go's `text/template`, through the `gtmpl` crate, so a confd template runs
//! unchanged: actions, pipelines, variables, `range` (with `$i, $v :=`),
//! `if`/`else if`, `with`, `define`/`template`, `{{-`/`-}}` trimming, and
//! Go's built-ins (`printf`, `eq`, `len`, `index`, `and`, `or`, `not`, …).
//! gtmpl is small and passively maintained; it was chosen over `minijinja`
//! (well kept, but Jinja syntax: every confd template would need rewriting)
//! and over writing a Go-template engine by hand. What it lacks is worked
//! around here: its functions are plain `fn` pointers, so the data a render
//! reads sits in a thread-local for the render (`functions`); its execution
//! errors carry no position, so the line an error names is found from the
//! failing call (`render`); it runs a `range`'s `{{else}}` even after
//! elements, so such ranges are rewritten to Go's meaning first (`compat`).
//! Known differences that remain: ranging over a map (a `json` object)
//! goes in no fixed order (Go sorts the keys), ranging over nil is an error
//! (Go does nothing), and `printf "%q"` does not quote.
//!
//! # Functions
//!
//! confd's, over the keys read under the `--keys` prefixes: `get` (`.Key`,
//! `.Value`), `gets` and `getvs` (Go `path.Match` patterns such as
//! `/app/upstream/*`; `gets` sorted by key, `getvs` by value), `getv KEY
//! [DEFAULT]` (an error naming the key when it is missing and no default is
//! given), `exists`, `ls` and `lsdir` (the names under a path, sorted;
//! `lsdir` only those with keys below them), `json` and `jsonArray`, `base`,
//! `dir`, `split`, `join`, `toUpper`, `toLower`, `contains`, `replace S OLD
//! NEW N`, `trimSuffix`, `getenv`, `map`, `reverse`, `parseBool`, `atoi`,
//! `add`, `sub`, `mul`, `div`, `mod`, `seq`, `fileExists`, `lookupIP`.
//! Not provided: `datetime`, `base64Encode`/`base64Decode`, `lookupSRV`,
//! `lookupIPV4`/`lookupIPV6`, `sortByLength`, `sortKVByLength`.
//!
//! shoal's, over the Services the API server keeps in the same store:
//!
//! - `endpoints "NAMESPACE/NAME" ["PORT-NAME"]` — a list with one entry per
//!   ready address and port of the Service's EndpointSlices (those labelled
//!   `kubernetes.io/service-name: NAME` under
//!   `/registry/endpointslices/NAMESPACE/`), sorted by address then port,
//!   each address and port once however many slices list it. Each entry has
//!   `.IP`, `.Port` (the endpoint's port: the pod's port, not the Service's;
//!   0 for a slice without ports), `.PortName`, `.Protocol`, `.NodeName`,
//!   `.Hostname` and `.PodName` (empty when not known). An endpoint whose
//!   `ready` condition is false is left out; an unset one counts as ready, as
//!   the API says. With a port name, only that port. A Service that does not
//!   exist or has no ready endpoints gives an empty list. `"NAME"` alone
//!   means the `default` namespace.
//! - `service "NAMESPACE/NAME"` — `.Name`, `.Namespace`, `.Type`,
//!   `.ClusterIP`, `.ClusterIPs`, `.ExternalIPs`, and `.Ports` (each with
//!   `.Name`, `.Port`, `.TargetPort`, `.NodePort`, `.Protocol`); an error
//!   when the Service does not exist.
//!
//! Everything one render reads is read at one store revision.
//!
//! # Staging and swap
//!
//! See `stage`: the text goes to a dotfile beside the destination, with the
//! destination's owner and mode (0644 for a new file); nothing is done when
//! the destination already holds it; the check command runs on it (`{{.src}}`
//! in the command is its path); it is renamed over the destination; the
//! reload command runs. A failed read, render or check leaves the
//! destination as it was and removes the staged file.

mod compat;
mod data;
mod functions;
mod render;
mod stage;
mod watch;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use client::{ClientError, Kv};

pub use data::{ServiceName, Snapshot};
pub use render::{RenderError, Rendered};
pub use stage::{Commands, Outcome, StageError};

/// What `shoal template` is asked to do.
#[derive(Debug, Clone)]
pub struct Settings {
    pub template_file: PathBuf,
    pub dest: PathBuf,
    /// The key prefixes read (and watched); keys elsewhere are not seen.
    pub prefixes: Vec<String>,
    pub commands: Commands,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read template {path}: {io}")]
    TemplateFile { path: PathBuf, io: std::io::Error },
    // The causes below are in the message, not chained as sources, so a
    // report prints each once on one line.
    #[error("cannot read the store: {0}")]
    Store(ClientError),
    #[error("template {0}")]
    Render(RenderError),
    #[error("{0}")]
    Stage(StageError),
    #[error("staging task failed: {0}")]
    Task(String),
}

impl From<ClientError> for TemplateError {
    fn from(error: ClientError) -> Self {
        TemplateError::Store(error)
    }
}

impl From<RenderError> for TemplateError {
    fn from(error: RenderError) -> Self {
        TemplateError::Render(error)
    }
}

impl From<StageError> for TemplateError {
    fn from(error: StageError) -> Self {
        TemplateError::Stage(error)
    }
}

/// How many times a render is done again to read Services it named that
/// were not read yet (a Service's name may come from another's data).
const MAX_RENDER_PASSES: usize = 4;

/// A template bound to a store.
pub struct Templater {
    kv: Arc<dyn Kv>,
    settings: Settings,
    template_text: String,
    file_label: String,
}

/// What one sync did, and what it read.
#[derive(Debug, Clone)]
pub struct Synced {
    pub outcome: Outcome,
    /// The revision the render read at.
    pub revision: i64,
    /// The Services the template named.
    pub services: BTreeSet<ServiceName>,
}

impl Templater {
    /// Reads the template file; the store is first reached by [`Templater::sync`].
    pub fn new(kv: Arc<dyn Kv>, settings: Settings) -> Result<Templater, TemplateError> {
        let template_text = std::fs::read_to_string(&settings.template_file).map_err(|io| {
            TemplateError::TemplateFile {
                path: settings.template_file.clone(),
                io,
            }
        })?;
        let file_label = settings.template_file.display().to_string();
        Ok(Templater {
            kv,
            settings,
            template_text,
            file_label,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Reads the store and renders, until every Service the template names
    /// was read in the same snapshot.
    pub async fn render(&self) -> Result<(Rendered, i64), TemplateError> {
        let mut services = BTreeSet::new();
        let mut passes = 0;
        loop {
            passes += 1;
            let snapshot = data::read(self.kv.as_ref(), &self.settings.prefixes, &services).await?;
            let revision = snapshot.revision;
            let rendered =
                render::render(&self.file_label, &self.template_text, Rc::new(snapshot))?;
            if rendered.services.is_subset(&services) || passes == MAX_RENDER_PASSES {
                return Ok((rendered, revision));
            }
            services.extend(rendered.services.iter().cloned());
        }
    }

    /// One read, render and swap: `--onetime`, and each round of `--watch`.
    pub async fn sync(&self) -> Result<Synced, TemplateError> {
        let (rendered, revision) = self.render().await?;
        let dest = self.settings.dest.clone();
        let commands = self.settings.commands.clone();
        let text = rendered.text;
        let outcome =
            tokio::task::spawn_blocking(move || stage::sync(&dest, text.as_bytes(), &commands))
                .await
                .map_err(|error| TemplateError::Task(error.to_string()))??;
        Ok(Synced {
            outcome,
            revision,
            services: rendered.services,
        })
    }

    /// `--watch`: syncs, then again on every change to the keys or Services
    /// the template reads, until `shutdown` completes. Failures are logged and
    /// retried; only a shutdown ends it.
    pub async fn watch(&self, shutdown: impl std::future::Future<Output = ()>) {
        watch::run(self, shutdown).await
    }

    fn kv(&self) -> &Arc<dyn Kv> {
        &self.kv
    }
}

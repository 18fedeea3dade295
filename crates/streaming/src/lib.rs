//! kubelet's streaming endpoints, for shoal's node agents: container logs
//! (`/containerLogs`), `exec` and `attach` over Kubernetes' remote-command
//! WebSocket protocols, served over TLS to the API server alone.
//!
//! The agent implements [`StreamBackend`]: it names a container's log files
//! and starts or attaches to processes. Everything protocol-shaped is here:
//! the channel framing and exit statuses (`channel`), the log options over
//! CRI-format log files (`cri_log`), the WebSocket session that joins a
//! process to its client (`session`), and the HTTPS server (`server`).
//! No printing; errors are [`StreamError`].
//!
//! An agent serves it as:
//! `Arc::new(AgentServer { backend, authorized_users:
//! vec![KUBELET_CLIENT_USER], authorized_groups: vec!["system:masters"] })
//! .serve(listener, agent_tls_config(cert, key, cluster_ca)?, shutdown)`,
//! on [`DEFAULT_PORT`], with a serving certificate from the cluster CA
//! that names the addresses its Node publishes (the API server verifies
//! it against them).

pub mod channel;
pub mod cri_log;
pub mod server;
pub mod session;

use std::path::PathBuf;
use std::pin::Pin;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

pub use channel::{Protocol, TerminalSize};
pub use cri_log::LogOptions;
pub use server::{AgentServer, ServeError, agent_tls_config};

/// kubelet's port, where the API server looks for an agent whose Node
/// does not publish one.
pub const DEFAULT_PORT: u16 = 10250;

/// The errors of a streaming request, each with the HTTP status kubelet
/// answers it with.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The pod or container is not on this node (404).
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be served as asked (400): a bad option, no
    /// previous container, a container that is not running.
    #[error("{0}")]
    BadRequest(String),
    /// The runtime failed (500).
    #[error("{0}")]
    Internal(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl StreamError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> StreamError {
        StreamError::Io {
            what: what.into(),
            source,
        }
    }

    /// The HTTP status code and the Status reason kubelet gives.
    pub fn code_and_reason(&self) -> (u16, &'static str) {
        match self {
            StreamError::NotFound(_) => (404, "NotFound"),
            StreamError::BadRequest(_) => (400, "BadRequest"),
            StreamError::Internal(_) | StreamError::Io { .. } => (500, "InternalError"),
        }
    }
}

/// The container a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// A container's log files, as the agent knows them: the log options are
/// applied here, over the files.
pub struct LogFiles {
    /// The current (or last) instance's CRI-format log file.
    pub current: PathBuf,
    /// The instance before it, for `--previous`, if one is kept.
    pub previous: Option<PathBuf>,
    /// Resolves when the current instance exits; `None` when it is not
    /// running. `follow` ends once it has resolved and the file is read.
    pub running: Option<BoxFuture<'static, ()>>,
}

/// Which of a process's streams the client wants, and whether it has a
/// terminal (then stdout and stderr are one stream, stdout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// `exec`: run `command` in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub container: ContainerRef,
    pub command: Vec<String>,
    pub options: StreamOptions,
}

/// `attach`: join the container's main process's streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    pub container: ContainerRef,
    pub options: StreamOptions,
}

pub type ProcessInput = Pin<Box<dyn AsyncWrite + Send>>;
pub type ProcessOutput = Pin<Box<dyn AsyncRead + Send>>;

/// A process joined to a client: the streams it asked for, where terminal
/// size changes go, and its exit code. Dropping it is how the session tells
/// the backend the client has gone (an exec'd process should then end).
pub struct Process {
    pub stdin: Option<ProcessInput>,
    pub stdout: Option<ProcessOutput>,
    pub stderr: Option<ProcessOutput>,
    pub resize: Option<tokio::sync::mpsc::UnboundedSender<TerminalSize>>,
    /// The exit code; attach resolves to 0 when its streams end.
    pub exit: BoxFuture<'static, Result<i32, StreamError>>,
}

/// What a node agent provides to the streaming server.
pub trait StreamBackend: Send + Sync + 'static {
    /// The log files of a container, or `NotFound`.
    fn log_files(&self, container: &ContainerRef) -> BoxFuture<'_, Result<LogFiles, StreamError>>;
    /// Starts `command` in a container.
    fn exec(&self, request: ExecRequest) -> BoxFuture<'_, Result<Process, StreamError>>;
    /// Attaches to a container's main process.
    fn attach(&self, request: AttachRequest) -> BoxFuture<'_, Result<Process, StreamError>>;
    /// The node's metrics for `/metrics`: the content type and the body in
    /// the format the scrape's `Accept` asks for. Without metrics, 404.
    fn metrics(
        &self,
        _accept: Option<String>,
    ) -> BoxFuture<'_, Result<(&'static str, String), StreamError>> {
        Box::pin(async { Err(StreamError::NotFound("404 page not found".to_string())) })
    }
}

//! What `kubectl logs`, `exec` and `attach` reach on this machine: the
//! agent's side of the streaming server (`streaming`), over the pods the
//! runtime holds. The API server calls it with its kubelet client
//! certificate; nothing else is let in.

use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use runtime::pod::{ContainerId, ContainerStatus, PodRuntime, log::Stream};
use streaming::{
    AttachRequest, ContainerRef, ExecRequest, LogFiles, Process, StreamBackend, StreamError,
    TerminalSize,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The runtime's pods, as the streaming server sees them.
pub struct Backend {
    runtime: PodRuntime,
}

fn internal(error: impl std::fmt::Display) -> StreamError {
    StreamError::Internal(error.to_string())
}

impl Backend {
    pub fn new(runtime: PodRuntime) -> Backend {
        Backend { runtime }
    }

    /// The current instance of a container (its highest attempt).
    async fn find(
        &self,
        container: &ContainerRef,
    ) -> Result<(ContainerId, ContainerStatus), StreamError> {
        let runtime = self.runtime.clone();
        let wanted = container.clone();
        tokio::task::spawn_blocking(move || {
            let sandboxes = runtime.list().map_err(internal)?;
            let sandbox = sandboxes
                .into_iter()
                .find(|sandbox| sandbox.namespace == wanted.namespace && sandbox.name == wanted.pod)
                .ok_or_else(|| {
                    StreamError::NotFound(format!(
                        "pod {:?} in namespace {:?} is not on this node",
                        wanted.pod, wanted.namespace
                    ))
                })?;
            sandbox
                .containers
                .into_iter()
                .filter(|record| record.name == wanted.container)
                .max_by_key(|record| record.attempt)
                .map(|record| (record.id, record.status))
                .ok_or_else(|| {
                    StreamError::NotFound(format!(
                        "container {:?} in pod {:?} is not available",
                        wanted.container, wanted.pod
                    ))
                })
        })
        .await
        .map_err(internal)?
    }

    async fn running(&self, container: &ContainerRef) -> Result<ContainerId, StreamError> {
        let (id, status) = self.find(container).await?;
        match status {
            ContainerStatus::Running { .. } => Ok(id),
            _ => Err(StreamError::BadRequest(format!(
                "container {} is not running",
                container.container
            ))),
        }
    }
}

/// Resolves when the container is no longer running.
fn exited(runtime: PodRuntime, id: ContainerId) -> BoxFuture<'static, ()> {
    async move {
        loop {
            let runtime = runtime.clone();
            let id = id.clone();
            let status = tokio::task::spawn_blocking(move || runtime.container_status(&id)).await;
            match status {
                Ok(Ok(ContainerStatus::Running { .. })) => {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                _ => return,
            }
        }
    }
    .boxed()
}

impl StreamBackend for Backend {
    fn metrics(
        &self,
        accept: Option<String>,
    ) -> BoxFuture<'_, Result<(&'static str, String), StreamError>> {
        let runtime = self.runtime.clone();
        async move {
            let snapshot = tokio::task::spawn_blocking(move || crate::metrics::read(&runtime))
                .await
                .map_err(internal)?
                .map_err(internal)?;
            Ok(crate::metrics::render(snapshot, accept.as_deref()))
        }
        .boxed()
    }

    fn log_files(&self, container: &ContainerRef) -> BoxFuture<'_, Result<LogFiles, StreamError>> {
        let container = container.clone();
        async move {
            let (id, status) = self.find(&container).await?;
            let runtime = self.runtime.clone();
            let lookup = id.clone();
            let (current, previous) = tokio::task::spawn_blocking(move || {
                let previous = runtime.previous_log_path(&lookup).map_err(internal)?;
                Ok::<_, StreamError>((runtime.log_path(&lookup), previous))
            })
            .await
            .map_err(internal)??;
            Ok(LogFiles {
                current,
                previous,
                running: matches!(status, ContainerStatus::Running { .. })
                    .then(|| exited(self.runtime.clone(), id)),
            })
        }
        .boxed()
    }

    fn exec(&self, request: ExecRequest) -> BoxFuture<'_, Result<Process, StreamError>> {
        async move {
            let id = self.running(&request.container).await?;
            let runtime = self.runtime.clone();
            let tty = request.options.tty;
            let command = request.command.clone();
            let mut process = tokio::task::spawn_blocking(move || runtime.exec(&id, &command, tty))
                .await
                .map_err(internal)?
                .map_err(|error| StreamError::BadRequest(error.to_string()))?;
            let mut result = Process {
                stdin: None,
                stdout: None,
                stderr: None,
                resize: None,
                exit: futures::future::pending().boxed(),
            };
            if let Some(terminal) = process.terminal.take() {
                let reader = terminal.try_clone().map_err(internal)?;
                let resizer = terminal.try_clone().map_err(internal)?;
                if request.options.stdin {
                    result.stdin = Some(Box::pin(tokio::fs::File::from_std(terminal)));
                }
                result.stdout = Some(Box::pin(tokio::fs::File::from_std(reader)));
                let (sender, mut sizes) = tokio::sync::mpsc::unbounded_channel::<TerminalSize>();
                tokio::spawn(async move {
                    while let Some(size) = sizes.recv().await {
                        let _ = rustix::termios::tcsetwinsize(
                            &resizer,
                            rustix::termios::Winsize {
                                ws_row: size.height,
                                ws_col: size.width,
                                ws_xpixel: 0,
                                ws_ypixel: 0,
                            },
                        );
                    }
                });
                result.resize = Some(sender);
            } else {
                if let Some(stdin) = process.stdin.take()
                    && request.options.stdin
                {
                    result.stdin = Some(Box::pin(tokio::fs::File::from_std(stdin)));
                }
                if let Some(stdout) = process.stdout.take() {
                    result.stdout = Some(Box::pin(tokio::fs::File::from_std(stdout)));
                }
                if let Some(stderr) = process.stderr.take() {
                    result.stderr = Some(Box::pin(tokio::fs::File::from_std(stderr)));
                }
            }
            result.exit = async move {
                tokio::task::spawn_blocking(move || process.wait())
                    .await
                    .map_err(internal)?
                    .map_err(internal)
            }
            .boxed();
            Ok(result)
        }
        .boxed()
    }

    fn attach(&self, request: AttachRequest) -> BoxFuture<'_, Result<Process, StreamError>> {
        async move {
            let id = self.running(&request.container).await?;
            let runtime = self.runtime.clone();
            let session = tokio::task::spawn_blocking(move || runtime.attach(&id))
                .await
                .map_err(internal)?
                .map_err(|error| StreamError::BadRequest(error.to_string()))?;
            let handle = tokio::runtime::Handle::current();
            // Output: a thread reads the container's frames into two pipes.
            let (mut stdout_writer, stdout_reader) = tokio::io::duplex(64 * 1024);
            let (mut stderr_writer, stderr_reader) = tokio::io::duplex(64 * 1024);
            let (done_sender, done) = tokio::sync::oneshot::channel::<()>();
            let mut reader = session.try_clone().map_err(internal)?;
            let output_handle = handle.clone();
            std::thread::Builder::new()
                .name("attach-output".into())
                .spawn(move || {
                    while let Ok(Some((stream, bytes))) = reader.read_output() {
                        let writer = match stream {
                            Stream::Stdout => &mut stdout_writer,
                            Stream::Stderr => &mut stderr_writer,
                        };
                        if output_handle.block_on(writer.write_all(&bytes)).is_err() {
                            break;
                        }
                    }
                    let _ = done_sender.send(());
                })
                .map_err(internal)?;
            // Input: what the client sends goes to the container.
            let (stdin_writer, mut stdin_reader) = tokio::io::duplex(64 * 1024);
            let mut input = session.try_clone().map_err(internal)?;
            let input_handle = handle.clone();
            std::thread::Builder::new()
                .name("attach-input".into())
                .spawn(move || {
                    let mut buffer = vec![0u8; 16 * 1024];
                    loop {
                        match input_handle.block_on(stdin_reader.read(&mut buffer)) {
                            Ok(0) | Err(_) => {
                                let _ = input.close_stdin();
                                return;
                            }
                            Ok(count) => {
                                if input.write_stdin(&buffer[..count]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                })
                .map_err(internal)?;
            let (resize, mut sizes) = tokio::sync::mpsc::unbounded_channel::<TerminalSize>();
            let mut resizer = session;
            tokio::task::spawn_blocking(move || {
                while let Some(size) = sizes.blocking_recv() {
                    if resizer.resize(size.width, size.height).is_err() {
                        return;
                    }
                }
            });
            Ok(Process {
                stdin: request.options.stdin.then(|| Box::pin(stdin_writer) as _),
                stdout: Some(Box::pin(stdout_reader)),
                stderr: (!request.options.tty).then(|| Box::pin(stderr_reader) as _),
                resize: request.options.tty.then_some(resize),
                exit: async move {
                    let _ = done.await;
                    Ok(0)
                }
                .boxed(),
            })
        }
        .boxed()
    }
}

/// Binds the streaming port on the Node's address, the one the API server
/// is told to call (so a machine whose Node address is loopback, as a
/// one-machine `shoal up`'s is, listens on nothing beyond loopback).
pub async fn listen(
    address: std::net::IpAddr,
    port: u16,
) -> Result<tokio::net::TcpListener, crate::AgentError> {
    tokio::net::TcpListener::bind((address, port))
        .await
        .map_err(|source| crate::AgentError::Io {
            what: format!("cannot listen on {address} port {port} for logs and exec"),
            source,
        })
}

/// Serves the streaming endpoints on `listener` until `shutdown`, with the
/// node's serving certificate and the cluster CA from `pki_dir`.
pub async fn serve(
    runtime: PodRuntime,
    pki_dir: &Path,
    listener: tokio::net::TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), crate::AgentError> {
    let read = |name: &str| {
        let path = pki_dir.join(name);
        let mut text = String::new();
        std::fs::File::open(&path)
            .and_then(|mut file| file.read_to_string(&mut text))
            .map_err(|source| crate::AgentError::Io {
                what: format!("cannot read {}", path.display()),
                source,
            })?;
        Ok::<_, crate::AgentError>(text)
    };
    let tls =
        streaming::agent_tls_config(&read("agent.crt")?, &read("agent.key")?, &read("ca.crt")?)
            .map_err(|error| crate::AgentError::Join(error.to_string()))?;
    let server = Arc::new(streaming::AgentServer {
        backend: Arc::new(Backend::new(runtime)),
        authorized_users: vec![apiserver::pki::KUBELET_CLIENT_USER.to_string()],
        authorized_groups: vec![apiserver::pki::ADMIN_GROUP.to_string()],
    });
    server
        .serve(listener, tls, async move {
            let _ = shutdown.wait_for(|stopped| *stopped).await;
        })
        .await;
    Ok(())
}

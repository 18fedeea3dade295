//! `kubectl logs`, `exec` and `attach` through shoal's API server to a node
//! agent's streaming server (`streaming::AgentServer`), with the real
//! clients: kubectl (the newest and 1.32) and the Python `kubernetes`
//! client. The agent runs in the test process over a backend that runs host
//! processes (`tokio::process`) and serves CRI-format log files the test
//! writes; the Node's status points the API server at it, and the pods are
//! bound to that Node.

mod common;
#[path = "common/kube.rs"]
mod kube;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use kube::{Background, Kubectl, KubectlRelease, Shoal};
use streaming::{
    AttachRequest, ContainerRef, ExecRequest, LogFiles, Process, ProcessInput, ProcessOutput,
    StreamBackend, StreamError, StreamOptions,
};

/// The first lines of `busy`'s log: fixed times long past, so `--since`
/// leaves them out; a line split in two fragments (`P`, then `F`).
const BUSY_LOG: &str = "\
2026-01-01T00:00:00.000000001Z stdout F line one
2026-01-01T00:00:01Z stderr F line two
2026-01-01T00:00:02.5Z stdout P line th
2026-01-01T00:00:02.6Z stdout F ree
";

/// How long `logs -f` may take to show a line or to end.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(15);

/// A backend that runs the commands on the host, and serves the log files
/// under `dir/<pod>/<container>/{current,previous}.log`.
struct HostBackend {
    dir: PathBuf,
    /// Whether a container is running, by `pod/container` (absent: not).
    running: Mutex<HashMap<String, tokio::sync::watch::Receiver<bool>>>,
}

impl HostBackend {
    fn container_dir(&self, container: &ContainerRef) -> PathBuf {
        self.dir.join(&container.pod).join(&container.container)
    }
}

fn spawn_host_process(command: &[String], options: StreamOptions) -> Result<Process, StreamError> {
    use std::process::Stdio;
    let (program, arguments) = command
        .split_first()
        .ok_or_else(|| StreamError::BadRequest("no command".to_string()))?;
    // A terminal comes from script(1): the command runs on a new pty.
    let mut child = if options.tty {
        let quoted: Vec<String> = command
            .iter()
            .map(|word| format!("'{}'", word.replace('\'', "'\\''")))
            .collect();
        let mut script = tokio::process::Command::new("script");
        script.args(["-qefc", &quoted.join(" "), "/dev/null"]);
        script
    } else {
        let mut plain = tokio::process::Command::new(program);
        plain.args(arguments);
        plain
    };
    let pipe_if = |wanted: bool| {
        if wanted {
            Stdio::piped()
        } else {
            Stdio::null()
        }
    };
    child
        .stdin(pipe_if(options.stdin))
        .stdout(pipe_if(options.stdout))
        .stderr(pipe_if(options.stderr && !options.tty))
        .kill_on_drop(true);
    let mut child = child
        .spawn()
        .map_err(|error| StreamError::Internal(format!("cannot run {program}: {error}")))?;
    let stdin = child
        .stdin
        .take()
        .map(|pipe| Box::pin(pipe) as ProcessInput);
    let stdout = child
        .stdout
        .take()
        .map(|pipe| Box::pin(pipe) as ProcessOutput);
    let stderr = child
        .stderr
        .take()
        .map(|pipe| Box::pin(pipe) as ProcessOutput);
    let (resize, _sizes) = tokio::sync::mpsc::unbounded_channel();
    Ok(Process {
        stdin,
        stdout,
        stderr,
        resize: Some(resize),
        exit: Box::pin(async move {
            use std::os::unix::process::ExitStatusExt as _;
            let status = child
                .wait()
                .await
                .map_err(|error| StreamError::io("waiting for the process", error))?;
            Ok(status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
        }),
    })
}

impl StreamBackend for HostBackend {
    fn log_files(&self, container: &ContainerRef) -> BoxFuture<'_, Result<LogFiles, StreamError>> {
        let dir = self.container_dir(container);
        let key = format!("{}/{}", container.pod, container.container);
        let running = self.running.lock().expect("running map").get(&key).cloned();
        let container = container.clone();
        Box::pin(async move {
            if !dir.is_dir() {
                return Err(StreamError::NotFound(format!(
                    "container {} of pod {} is not on this node",
                    container.container, container.pod
                )));
            }
            let previous = dir.join("previous.log");
            let running: Option<BoxFuture<'static, ()>> = match running {
                Some(mut running) if *running.borrow() => Some(Box::pin(async move {
                    let _ = running.wait_for(|running| !*running).await;
                })),
                _ => None,
            };
            Ok(LogFiles {
                current: dir.join("current.log"),
                previous: previous.exists().then_some(previous),
                running,
            })
        })
    }

    fn exec(&self, request: ExecRequest) -> BoxFuture<'_, Result<Process, StreamError>> {
        Box::pin(async move { spawn_host_process(&request.command, request.options) })
    }

    fn attach(&self, request: AttachRequest) -> BoxFuture<'_, Result<Process, StreamError>> {
        // The container's main process, as this backend plays it.
        let main = ["sh", "-c", "echo attached; read line; echo got $line"].map(String::from);
        Box::pin(async move { spawn_host_process(&main, request.options) })
    }
}

/// A shoal, a node agent in this process on 127.0.0.1, the Node `n1` that
/// points at it, and the pods the checks use.
struct Cluster {
    shoal: Shoal,
    agent_port: u16,
    logs_dir: PathBuf,
    busy_running: tokio::sync::watch::Sender<bool>,
    stop_agent: Option<tokio::sync::oneshot::Sender<()>>,
    /// Declared last: the agent stops before its runtime goes.
    _runtime: tokio::runtime::Runtime,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(stop) = self.stop_agent.take() {
            let _ = stop.send(());
        }
    }
}

fn pki_dir(shoal: &Shoal) -> PathBuf {
    shoal.dir.path().join("data/pki")
}

fn write_log(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("create the log directory");
    std::fs::write(path, text).expect("write a log file");
}

fn append_log(path: &Path, text: &str) {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open a log file");
    file.write_all(text.as_bytes())
        .expect("append to a log file");
}

impl Cluster {
    fn start() -> Cluster {
        let shoal = Shoal::start();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let logs_dir = shoal.dir.path().join("agent-logs");
        let busy_log = logs_dir.join("busy/app/current.log");
        let recent = streaming::cri_log::format_time(SystemTime::now() - Duration::from_secs(10));
        write_log(
            &busy_log,
            &format!("{BUSY_LOG}{recent} stdout F recent line\n"),
        );
        write_log(
            &logs_dir.join("busy/app/previous.log"),
            "2025-12-31T23:00:00Z stdout F old instance\n",
        );
        for container in ["a", "b"] {
            write_log(
                &logs_dir.join(format!("two/{container}/current.log")),
                &format!("2026-01-01T00:00:00Z stdout F from {container}\n"),
            );
        }
        let (busy_running, running) = tokio::sync::watch::channel(true);
        let backend = HostBackend {
            dir: logs_dir.clone(),
            running: Mutex::new(HashMap::from([("busy/app".to_string(), running)])),
        };
        let (cert, key, ca) = apiserver::pki::issue_serving_certificate(
            &pki_dir(&shoal),
            "n1",
            &["127.0.0.1".to_string(), "localhost".to_string()],
        )
        .expect("an agent serving certificate");
        let tls = streaming::agent_tls_config(&cert, &key, &ca).expect("agent TLS settings");
        let server = Arc::new(streaming::AgentServer {
            backend: Arc::new(backend),
            authorized_users: vec![apiserver::pki::KUBELET_CLIENT_USER.to_string()],
            authorized_groups: vec!["system:masters".to_string()],
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the agent's port");
        let agent_port = listener.local_addr().expect("agent address").port();
        let (stop_agent, stopped) = tokio::sync::oneshot::channel::<()>();
        runtime.spawn(server.serve(listener, tls, async move {
            let _ = stopped.await;
        }));
        let cluster = Cluster {
            shoal,
            agent_port,
            logs_dir,
            busy_running,
            stop_agent: Some(stop_agent),
            _runtime: runtime,
        };
        cluster.create_objects();
        cluster
    }

    fn kubectl(&self, release: KubectlRelease) -> Kubectl {
        Kubectl::new(release, &self.shoal)
    }

    fn create_objects(&self) {
        let kubectl = self.kubectl(KubectlRelease::Newest);
        let manifests = self.shoal.dir.path().join("streams.yaml");
        let pod = |name: &str, node: Option<&str>, containers: &[&str]| {
            let containers: Vec<String> = containers
                .iter()
                .map(|container| format!("  - name: {container}\n    image: busybox\n"))
                .collect();
            let node = node.map_or(String::new(), |node| format!("  nodeName: {node}\n"));
            format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{node}  containers:\n{}",
                containers.concat()
            )
        };
        let text = [
            "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n".to_string(),
            "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: n2\n".to_string(),
            pod("busy", Some("n1"), &["app"]),
            pod("two", Some("n1"), &["a", "b"]),
            pod("pending", None, &["app"]),
            pod("lost", Some("n2"), &["app"]),
        ]
        .concat();
        std::fs::write(&manifests, text).expect("write the manifests");
        let cwd = self.shoal.dir.path();
        kubectl.ok(&format!("kubectl create -f {}", manifests.display()), cwd);
        // n2's agent is at a port nothing listens on.
        let closed_port = common::free_ports(1)[0];
        for (node, port) in [("n1", self.agent_port), ("n2", closed_port)] {
            let status = format!(
                r#"{{"status":{{"addresses":[{{"type":"Hostname","address":"{node}"}},{{"type":"InternalIP","address":"127.0.0.1"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{port}}}}}}}}}"#
            );
            kubectl.ok(
                &format!(
                    "kubectl patch node {node} --subresource=status --type=merge -p '{status}'"
                ),
                cwd,
            );
        }
    }

    fn busy_log(&self) -> PathBuf {
        self.logs_dir.join("busy/app/current.log")
    }
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `command_line` and checks its stdout and exit code.
fn expect(kubectl: &Kubectl, cwd: &Path, command_line: &str, stdout: &str, code: i32) -> Output {
    let output = kubectl.run(command_line, cwd);
    assert_eq!(
        (stdout_of(&output).as_str(), output.status.code()),
        (stdout, Some(code)),
        "`{command_line}` ({:?}):\n{}",
        kubectl.release,
        common::describe_output(&output)
    );
    output
}

/// Runs `command_line`, which must fail with `message` in its stderr.
fn expect_error(kubectl: &Kubectl, cwd: &Path, command_line: &str, message: &str) {
    let output = kubectl.run(command_line, cwd);
    assert!(
        !output.status.success() && stderr_of(&output).contains(message),
        "`{command_line}` ({:?}) should fail with {message:?}:\n{}",
        kubectl.release,
        common::describe_output(&output)
    );
}

fn check_kubectl(release: KubectlRelease) {
    release.binary();
    let cluster = Cluster::start();
    let kubectl = cluster.kubectl(release);
    let cwd = cluster.shoal.dir.path();

    // Logs, with each option.
    expect(
        &kubectl,
        cwd,
        "kubectl logs busy",
        "line one\nline two\nline three\nrecent line\n",
        0,
    );
    expect(
        &kubectl,
        cwd,
        "kubectl logs busy -c app --tail=3",
        "line three\nrecent line\n",
        0,
    );
    expect(
        &kubectl,
        cwd,
        "kubectl logs busy --tail=1",
        "recent line\n",
        0,
    );
    expect(
        &kubectl,
        cwd,
        "kubectl logs busy --since=1h",
        "recent line\n",
        0,
    );
    expect(
        &kubectl,
        cwd,
        "kubectl logs busy --since-time=2026-01-01T00:00:01Z",
        "line two\nline three\nrecent line\n",
        0,
    );
    let stamped = kubectl.ok("kubectl logs busy --timestamps --tail=5", cwd);
    let lines: Vec<&str> = stamped.lines().collect();
    assert_eq!(
        &lines[..3],
        [
            "2026-01-01T00:00:00.000000001Z line one",
            "2026-01-01T00:00:01Z line two",
            "2026-01-01T00:00:02.5Z line three"
        ],
        "{stamped}"
    );
    assert!(lines[3].ends_with("Z recent line"), "{stamped}");
    expect(
        &kubectl,
        cwd,
        "kubectl logs busy --limit-bytes=12",
        "line one\nlin",
        0,
    );
    expect(
        &kubectl,
        cwd,
        "kubectl logs busy --previous",
        "old instance\n",
        0,
    );
    expect(&kubectl, cwd, "kubectl logs two -c b", "from b\n", 0);
    // A container that is not running: follow stops at the end.
    expect(&kubectl, cwd, "kubectl logs -f two -c a", "from a\n", 0);
    expect_error(
        &kubectl,
        cwd,
        "kubectl logs two -c a --previous",
        "previous terminated container \"a\" in pod \"two\" not found",
    );

    // logs -f shows new lines, and ends when the container exits.
    let follow = Background::spawn(kubectl.command("kubectl logs -f busy --tail=1", cwd));
    follow.wait_for_lines(1, FOLLOW_TIMEOUT);
    let now = streaming::cri_log::format_time(SystemTime::now());
    append_log(&cluster.busy_log(), &format!("{now} stdout F a new line\n"));
    follow.wait_for_lines(2, FOLLOW_TIMEOUT);
    assert_eq!(follow.stdout(), "recent line\na new line\n");
    cluster.busy_running.send_replace(false);
    let deadline = Instant::now() + FOLLOW_TIMEOUT;
    let mut follow = follow;
    let exited = loop {
        if let Some(status) = follow.try_wait() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, _) = follow.stop();
    assert!(
        exited.is_some_and(|status| status.success()),
        "logs -f did not end with the container ({exited:?}): {stdout}"
    );
    cluster.busy_running.send_replace(true);

    // exec: output, exit codes, stdin, stderr, a terminal.
    let output = expect(
        &kubectl,
        cwd,
        "kubectl exec busy -- sh -c 'echo hi; exit 3'",
        "hi\n",
        3,
    );
    assert!(
        stderr_of(&output).contains("command terminated with exit code 3"),
        "{}",
        common::describe_output(&output)
    );
    expect(
        &kubectl,
        cwd,
        "kubectl exec busy -c app -- echo a b",
        "a b\n",
        0,
    );
    let output = expect(
        &kubectl,
        cwd,
        "kubectl exec busy -- sh -c 'echo to-stderr >&2'",
        "",
        0,
    );
    assert_eq!(stderr_of(&output), "to-stderr\n");
    let with_stdin = common::run_with_watchdog(
        kubectl.command("kubectl exec -i busy -- sh -c 'cat; echo done'", cwd),
        Some(b"from stdin\n"),
        kube::KUBECTL_TIMEOUT,
    );
    assert_eq!(
        (stdout_of(&with_stdin).as_str(), with_stdin.status.code()),
        ("from stdin\ndone\n", Some(0)),
        "{}",
        common::describe_output(&with_stdin)
    );
    // -it needs a terminal on kubectl's side too: script(1) gives it one.
    let inner = kubectl.command(
        "kubectl exec -it busy -- sh -c 'tty >/dev/null && echo tty-ok'",
        cwd,
    );
    let inner_line = std::iter::once(inner.get_program())
        .chain(inner.get_args())
        .map(|word| format!("'{}'", word.to_string_lossy().replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let mut with_tty = Command::new("script");
    with_tty.args(["-qefc", &inner_line, "/dev/null"]);
    for (key, value) in inner.get_envs() {
        match value {
            Some(value) => with_tty.env(key, value),
            None => with_tty.env_remove(key),
        };
    }
    with_tty.current_dir(cwd);
    let tty_output = common::run_with_watchdog(with_tty, Some(b""), kube::KUBECTL_TIMEOUT);
    assert!(
        tty_output.status.success() && stdout_of(&tty_output).contains("tty-ok"),
        "exec -it:\n{}",
        common::describe_output(&tty_output)
    );

    // attach joins the container's main process.
    let attached = common::run_with_watchdog(
        kubectl.command("kubectl attach -i busy", cwd),
        Some(b"hello\n"),
        kube::KUBECTL_TIMEOUT,
    );
    assert!(
        attached.status.success() && stdout_of(&attached).contains("got hello"),
        "attach:\n{}",
        common::describe_output(&attached)
    );

    // The errors, as kubectl shows kube-apiserver's.
    expect_error(
        &kubectl,
        cwd,
        "kubectl exec pending -- true",
        "pod pending does not have a host assigned",
    );
    expect_error(
        &kubectl,
        cwd,
        "kubectl logs busy -c nope",
        "container nope is not valid for pod busy",
    );
    expect_error(
        &kubectl,
        cwd,
        "kubectl exec busy -c nope -- true",
        "container nope is not valid for pod busy",
    );
    // kubectl checks a container's name itself; the API server's check
    // shows through a raw request.
    expect_error(
        &kubectl,
        cwd,
        "kubectl get --raw '/api/v1/namespaces/default/pods/busy/log?container=nope'",
        "Error from server (BadRequest): container nope is not valid for pod busy",
    );
    expect(&kubectl, cwd, "kubectl logs pending", "", 0);
    expect_error(
        &kubectl,
        cwd,
        "kubectl get --raw /api/v1/namespaces/default/pods/two/log",
        "a container name must be specified for pod two, choose one of: [a b]",
    );
    expect_error(&kubectl, cwd, "kubectl logs lost", "node n2");
    expect_error(
        &kubectl,
        cwd,
        "kubectl exec lost -- true",
        "error dialing backend",
    );
    expect_error(
        &kubectl,
        cwd,
        "kubectl logs nosuchpod",
        "pods \"nosuchpod\" not found",
    );
    drop(cluster);
}

#[test]
fn kubectl_newest_logs_exec_attach_through_the_agent() {
    check_kubectl(KubectlRelease::Newest);
}

#[test]
fn kubectl_1_32_logs_exec_attach_through_the_agent() {
    check_kubectl(KubectlRelease::V1_32);
}

#[test]
fn the_python_client_streams_exec_and_logs() {
    let python = kube::venv().join("bin/python");
    assert!(
        python.is_file(),
        "the Python venv is missing at {}: run scripts/install-deps",
        python.display()
    );
    let cluster = Cluster::start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/kube_streams.py");
    let mut command = Command::new(&python);
    command
        .arg(&script)
        .arg(&cluster.shoal.kubeconfig)
        .env("HOME", cluster.shoal.new_home("python"))
        .env_remove("KUBECONFIG")
        .env("PYTHONUNBUFFERED", "1");
    let output = common::run_with_watchdog(command, None, Duration::from_secs(120));
    assert!(
        output.status.success(),
        "{} failed:\n{}\nshoal's log:\n{}",
        script.display(),
        common::describe_output(&output),
        cluster.shoal.log()
    );
}

/// curl to the agent directly, with the given client certificate (or none).
fn curl_agent(cluster: &Cluster, certificate: Option<(&Path, &Path)>) -> Output {
    curl_agent_path(
        cluster,
        certificate,
        "/containerLogs/default/busy/app?tailLines=1",
    )
}

fn curl_agent_path(cluster: &Cluster, certificate: Option<(&Path, &Path)>, path: &str) -> Output {
    let pki = pki_dir(&cluster.shoal);
    let mut command = Command::new("curl");
    command
        .arg("--silent")
        .arg("--show-error")
        .arg("--max-time")
        .arg("10")
        .arg("--cacert")
        .arg(pki.join("ca.crt"));
    if let Some((cert, key)) = certificate {
        command.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    command.arg(format!("https://127.0.0.1:{}{path}", cluster.agent_port));
    common::run_with_watchdog(command, None, Duration::from_secs(20))
}

#[test]
fn the_agent_serves_only_the_api_servers_certificate() {
    let cluster = Cluster::start();
    let pki = pki_dir(&cluster.shoal);
    // The API server's own kubelet client certificate is let in.
    let allowed = curl_agent(
        &cluster,
        Some((
            &pki.join("apiserver-kubelet-client.crt"),
            &pki.join("apiserver-kubelet-client.key"),
        )),
    );
    assert_eq!(
        stdout_of(&allowed),
        "recent line\n",
        "{}",
        common::describe_output(&allowed)
    );
    // An exec without a WebSocket upgrade (SPDY's POST, or none) is
    // refused with a Status; unknown paths are 404.
    let api_server = (
        pki.join("apiserver-kubelet-client.crt"),
        pki.join("apiserver-kubelet-client.key"),
    );
    let status_of = |output: &Output| -> serde_json::Value {
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|_| panic!("not a Status:\n{}", common::describe_output(output)))
    };
    let plain_exec = curl_agent_path(
        &cluster,
        Some((&api_server.0, &api_server.1)),
        "/exec/default/busy/app?command=true&stdout=1",
    );
    let status = status_of(&plain_exec);
    assert_eq!(status["code"], 400, "{status}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|message| message.starts_with("Upgrade request required")),
        "{status}"
    );
    let unknown = curl_agent_path(&cluster, Some((&api_server.0, &api_server.1)), "/configz");
    assert_eq!(status_of(&unknown)["code"], 404);
    // Another user of the same CA is refused.
    let (cert, key) = apiserver::pki::issue_client_certificate(&pki, "someone", &["developers"])
        .expect("a client certificate");
    let cert_path = cluster.shoal.dir.path().join("someone.crt");
    let key_path = cluster.shoal.dir.path().join("someone.key");
    std::fs::write(&cert_path, cert).expect("write the certificate");
    std::fs::write(&key_path, key).expect("write the key");
    let refused = curl_agent(&cluster, Some((&cert_path, &key_path)));
    let status: serde_json::Value = serde_json::from_slice(&refused.stdout)
        .unwrap_or_else(|_| panic!("not a Status:\n{}", common::describe_output(&refused)));
    assert_eq!(status["code"], 403, "{status}");
    assert_eq!(
        status["message"],
        "Forbidden (user=someone, verb=get, resource=nodes, subresource=proxy)"
    );
    // A client without a certificate does not get past TLS.
    let anonymous = curl_agent(&cluster, None);
    assert!(
        !anonymous.status.success() && anonymous.stdout.is_empty(),
        "{}",
        common::describe_output(&anonymous)
    );
}

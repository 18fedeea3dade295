//! `shoal template` as a user runs it, against a real `shoal store` and
//! against etcd 3.4: a confd template of an nginx upstream rendered from keys,
//! a check command that fails (old file kept) and one that passes (file
//! swapped, reload run), a render error that names its line, and a watch that
//! renders again when a key and when a Service's EndpointSlice change and
//! stops on SIGTERM. Keys are written with the real etcdctl; EndpointSlices
//! are written where and as the API server stores them.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cluster, ClusterOptions, Flavor, describe_output, run_with_watchdog};

/// How long a `--onetime` run may take before the test calls it hung.
const ONETIME_WATCHDOG: Duration = Duration::from_secs(30);
/// How long a watch may take to render a change.
const RENDER_WAIT: Duration = Duration::from_secs(15);

const NGINX_TEMPLATE: &str = r#"upstream {{getv "/app/name"}} {
{{- range gets "/app/upstream/*"}}
    server {{.Value}}; # {{base .Key}}
{{- end}}
}
"#;

fn put(cluster: &Cluster, key: &str, value: &str) {
    let output = cluster.etcdctl(&["put", key, value]);
    assert!(
        output.status.success(),
        "put {key}: {}",
        describe_output(&output)
    );
}

fn delete(cluster: &Cluster, key: &str) {
    let output = cluster.etcdctl(&["del", key]);
    assert!(
        output.status.success(),
        "del {key}: {}",
        describe_output(&output)
    );
}

fn shoal_template(cluster: &Cluster, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
    command
        .arg("template")
        .arg(format!("--endpoints={}", cluster.endpoints().join(",")))
        .args(args);
    command
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).expect("write a test file");
    path.display().to_string()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The names in `directory` starting with a dot: staged files left behind.
fn staged_files(directory: &Path) -> Vec<String> {
    std::fs::read_dir(directory)
        .expect("read the test directory")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.starts_with('.'))
        .collect()
}

/// An EndpointSlice of the Service `default/web` as the API server stores
/// it, with one ready and one unready pod on port `http` 8080.
fn web_slice(ready_ip: &str, unready_ip: &str) -> String {
    serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-x7k2p",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "web"}
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [ready_ip], "conditions": {"ready": true}, "nodeName": "n1",
             "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-1"}},
            {"addresses": [unready_ip], "conditions": {"ready": false}, "nodeName": "n2"}
        ]
    })
    .to_string()
}

/// Waits until `dest` holds `expected`; panics with the watcher's log if it
/// does not in time.
fn wait_for_text(dest: &Path, expected: &str, log: &Path) {
    let deadline = Instant::now() + RENDER_WAIT;
    while Instant::now() < deadline {
        if read(dest) == expected {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{} never held\n{expected}\nit holds\n{}\nwatch log:\n{}",
        dest.display(),
        read(dest),
        read(log)
    );
}

/// A running `shoal template --watch`, killed if the test ends before it
/// stopped (a failed assertion must not leave it running).
struct Watcher(Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// SIGTERM, then the exit status within a bound.
fn terminate(child: &mut Child, log: &Path) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait for shoal template") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "shoal template --watch ignored SIGTERM; log:\n{}",
                read(log)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn scenario(flavor: Flavor) {
    let cluster = Cluster::start(flavor, 1, ClusterOptions::default());
    let directory = tempfile::tempdir().expect("a test directory");
    let dir = directory.path();
    let template = write(&dir.join("nginx.tmpl"), NGINX_TEMPLATE);
    let dest_path = dir.join("app.conf");
    let dest = dest_path.display().to_string();
    let reloads = dir.join("reloads");
    let reload_cmd = format!("echo reloaded >> {}", reloads.display());
    put(&cluster, "/app/name", "web");
    put(&cluster, "/app/upstream/b", "10.0.0.2:80");
    put(&cluster, "/app/upstream/a", "10.0.0.1:80");
    put(&cluster, "/elsewhere/c", "not read");

    // A passing check: the file is swapped in and the reload runs.
    let output = run_with_watchdog(
        shoal_template(
            &cluster,
            &[
                "--template-file",
                &template,
                "--dest",
                &dest,
                "--keys",
                "/app",
                "--check-cmd",
                "grep -q 'server 10.0.0.1:80' {{.src}}",
                "--reload-cmd",
                &reload_cmd,
                "--onetime",
            ],
        ),
        None,
        ONETIME_WATCHDOG,
    );
    assert!(output.status.success(), "{}", describe_output(&output));
    let first = "upstream web {\n    server 10.0.0.1:80; # a\n    server 10.0.0.2:80; # b\n}\n";
    assert_eq!(read(&dest_path), first);
    assert_eq!(read(&reloads), "reloaded\n");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&dest_path)
            .expect("dest")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644, "a new file is 0644");
    }

    // Unchanged: no check and no reload (the check would fail).
    let output = run_with_watchdog(
        shoal_template(
            &cluster,
            &[
                "--template-file",
                &template,
                "--dest",
                &dest,
                "--keys",
                "/app",
                "--check-cmd",
                "false",
                "--reload-cmd",
                &reload_cmd,
            ],
        ),
        None,
        ONETIME_WATCHDOG,
    );
    assert!(output.status.success(), "{}", describe_output(&output));
    assert_eq!(read(&reloads), "reloaded\n");

    // A failing check: the old file stays, the staged one goes, no reload.
    put(&cluster, "/app/upstream/c", "10.0.0.3:80");
    let output = run_with_watchdog(
        shoal_template(
            &cluster,
            &[
                "--template-file",
                &template,
                "--dest",
                &dest,
                "--keys",
                "/app",
                "--check-cmd",
                "echo 'nginx: [emerg] bad upstream' >&2; exit 1",
                "--reload-cmd",
                &reload_cmd,
            ],
        ),
        None,
        ONETIME_WATCHDOG,
    );
    assert!(!output.status.success(), "a failed check fails the run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("check command") && stderr.contains("bad upstream"),
        "{}",
        describe_output(&output)
    );
    assert_eq!(read(&dest_path), first, "the old file is kept");
    assert_eq!(
        staged_files(dir),
        Vec::<String>::new(),
        "the staged file is removed"
    );
    assert_eq!(read(&reloads), "reloaded\n");

    // A render error: one line naming the template file and line.
    let bad = write(
        &dir.join("bad.tmpl"),
        "upstream {{getv \"/app/name\"}} {\n    # fine so far\n    server {{getv \"/app/missing\"}};\n}\n",
    );
    let output = run_with_watchdog(
        shoal_template(
            &cluster,
            &["--template-file", &bad, "--dest", &dest, "--keys", "/app"],
        ),
        None,
        ONETIME_WATCHDOG,
    );
    assert!(!output.status.success(), "a render error fails the run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim(),
        format!("error: template {bad}:3: key does not exist: /app/missing"),
        "{}",
        describe_output(&output)
    );
    assert_eq!(read(&dest_path), first, "the old file is kept");
    assert_eq!(staged_files(dir), Vec::<String>::new());

    // The watch: keys and a Service's endpoints.
    let watched = write(
        &dir.join("watched.tmpl"),
        r#"upstream {{getv "/app/name"}} {
{{- range endpoints "default/web" "http"}}
    server {{.IP}}:{{.Port}}; # {{.PodName}} on {{.NodeName}}
{{- else}}
    server 127.0.0.1:8080 down;
{{- end}}
}
"#,
    );
    // The watch starts while its template cannot render: the error is
    // logged, the old file kept, and writing the key mends it.
    delete(&cluster, "/app/name");
    let log = dir.join("watch.log");
    let mut watcher = Watcher(
        shoal_template(
            &cluster,
            &[
                "--template-file",
                &watched,
                "--dest",
                &dest,
                "--keys",
                "/app",
                "--reload-cmd",
                &reload_cmd,
                "--watch",
            ],
        )
        // The watch's own debug lines (what changed), not the gRPC stack's.
        .env("SHOAL_LOG", "info,template=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("a log file"))
        .spawn()
        .expect("start shoal template --watch"),
    );
    let deadline = Instant::now() + RENDER_WAIT;
    while !read(&log).contains("key does not exist: /app/name") {
        assert!(
            Instant::now() < deadline,
            "no render error logged:\n{}",
            read(&log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        read(&log).contains(&format!("{watched}:1: key does not exist: /app/name")),
        "the logged error names the template line:\n{}",
        read(&log)
    );
    assert_eq!(
        read(&dest_path),
        first,
        "the old file is kept while the render fails"
    );
    put(&cluster, "/app/name", "web");
    wait_for_text(
        &dest_path,
        "upstream web {\n    server 127.0.0.1:8080 down;\n}\n",
        &log,
    );
    let slice_key = "/registry/endpointslices/default/web-x7k2p";
    put(&cluster, slice_key, &web_slice("10.42.0.5", "10.42.1.9"));
    wait_for_text(
        &dest_path,
        "upstream web {\n    server 10.42.0.5:8080; # web-1 on n1\n}\n",
        &log,
    );
    put(&cluster, "/app/name", "web2");
    wait_for_text(
        &dest_path,
        "upstream web2 {\n    server 10.42.0.5:8080; # web-1 on n1\n}\n",
        &log,
    );
    // Another Service's slice in the same namespace changes nothing; the
    // pod moving does.
    put(
        &cluster,
        "/registry/endpointslices/default/other-aaaaa",
        &web_slice("10.42.3.3", "10.42.3.4").replace("\"web\"", "\"other\""),
    );
    put(&cluster, slice_key, &web_slice("10.42.2.8", "10.42.1.9"));
    wait_for_text(
        &dest_path,
        "upstream web2 {\n    server 10.42.2.8:8080; # web-1 on n1\n}\n",
        &log,
    );
    delete(&cluster, slice_key);
    wait_for_text(
        &dest_path,
        "upstream web2 {\n    server 127.0.0.1:8080 down;\n}\n",
        &log,
    );
    let status = terminate(&mut watcher.0, &log);
    assert!(
        status.success(),
        "a clean stop on SIGTERM: {status}; log:\n{}",
        read(&log)
    );
    // One reload per change written: the first onetime run, then the watch's
    // first render and each of its four changes.
    assert_eq!(read(&reloads).lines().count(), 6, "log:\n{}", read(&log));
    assert_eq!(staged_files(dir), Vec::<String>::new());
}

#[test]
fn template_against_shoal() {
    scenario(Flavor::Shoal);
}

#[test]
fn template_against_etcd() {
    scenario(Flavor::Etcd);
}

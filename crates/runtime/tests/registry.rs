//! `image fetch` against a real registry: Debian's `docker-registry` on a
//! loopback port, with images pushed to it by `skopeo` (OCI and docker v2
//! manifests, a multi-platform index). Fetch by tag and by digest, run what
//! was fetched, and the failures: a missing image, https against a plain-http
//! registry, no registry at all, and tampered blobs, which must leave
//! nothing in the content store.

mod common;

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Shoal, busybox_entries, layer_tar, require_container_support, write_oci_layout};

const REGISTRY: &str = "/usr/bin/docker-registry";
const INSECURE: &str = "--insecure-options=image";

/// A `docker-registry` serving plain http on a free loopback port, storing
/// into a temporary directory; killed when dropped.
struct Registry {
    child: Child,
    storage: tempfile::TempDir,
    /// `127.0.0.1:PORT`
    address: String,
}

impl Registry {
    fn start() -> Registry {
        Registry::start_with_auth(None)
    }

    /// With `htpasswd`, the registry asks for a login (HTTP Basic) checked
    /// against that file's line.
    fn start_with_auth(htpasswd: Option<&str>) -> Registry {
        assert!(
            Path::new(REGISTRY).exists(),
            "{REGISTRY} is missing: run crates/runtime/install-deps.sh (Debian's docker-registry)"
        );
        let storage = tempfile::tempdir().unwrap();
        // The port is free now; the registry binds it a moment later.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = storage.path().join("config.yml");
        let auth = match htpasswd {
            Some(line) => {
                let path = storage.path().join("htpasswd");
                fs::write(&path, format!("{line}\n")).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                    path.display()
                )
            }
            None => String::new(),
        };
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n{auth}",
                storage.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut registry = Registry {
            child,
            storage,
            address,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&registry.address).is_err() {
            if let Some(status) = registry.child.try_wait().unwrap() {
                panic!("docker-registry exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        registry
    }

    /// Pushes an image with skopeo (`extra` are skopeo copy's options).
    fn push(&self, source: &str, name_and_tag: &str, extra: &[&str]) {
        let destination = format!("docker://{}/{name_and_tag}", self.address);
        let mut args = vec!["copy", "--quiet", "--dest-tls-verify=false"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[source, &destination]);
        let output = Command::new("skopeo")
            .args(&args)
            .output()
            .expect("cannot run skopeo: run crates/runtime/install-deps.sh");
        assert!(
            output.status.success(),
            "skopeo {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The digest the registry itself recorded for a tag.
    fn tag_digest(&self, repository: &str, tag: &str) -> String {
        let link = self.storage.path().join(format!(
            "data/docker/registry/v2/repositories/{repository}/_manifests/tags/{tag}/current/link"
        ));
        fs::read_to_string(&link)
            .unwrap_or_else(|error| panic!("{}: {error}", link.display()))
            .trim()
            .to_string()
    }

    /// Where the registry keeps a blob's bytes.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage.path().join(format!(
            "data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OCI layout holding the busybox test image, tagged `tag`; returns the
/// layout's `oci:DIR:TAG` and the manifest's digest.
fn busybox_layout(work: &Path, tag: &str) -> (String, String) {
    let dir = work.join(format!("layout-{tag}"));
    let manifest_hex = write_oci_layout(&dir, tag, &[layer_tar(&busybox_entries())]);
    (
        format!("oci:{}:{tag}", dir.display()),
        format!("sha256:{manifest_hex}"),
    )
}

fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Turns the layout made by `busybox_layout` into a multi-platform image:
/// its tag points at an index with the busybox manifest for this machine
/// and a second manifest, for another architecture, listed first.
fn make_multi_platform(layout: &str, host_manifest: &str) {
    let (dir, tag) = layout.trim_start_matches("oci:").rsplit_once(':').unwrap();
    let blobs = Path::new(dir).join("blobs/sha256");
    let read = |digest: &str| -> serde_json::Value {
        serde_json::from_slice(&fs::read(blobs.join(digest.trim_start_matches("sha256:"))).unwrap())
            .unwrap()
    };
    let put = |value: &serde_json::Value| -> (String, usize) {
        let bytes = serde_json::to_vec(value).unwrap();
        let hex = common::sha256_hex(&bytes);
        fs::write(blobs.join(&hex), &bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let mut manifest = read(host_manifest);
    let host_manifest_size = serde_json::to_vec(&manifest).unwrap().len();
    let mut config = read(manifest["config"]["digest"].as_str().unwrap());
    let other_architecture = if host_architecture() == "s390x" {
        "ppc64le"
    } else {
        "s390x"
    };
    config["architecture"] = other_architecture.into();
    let (config_digest, config_size) = put(&config);
    manifest["config"]["digest"] = config_digest.into();
    manifest["config"]["size"] = config_size.into();
    let (other_manifest, other_size) = put(&manifest);
    let entry = |digest: &str, size: usize, architecture: &str| {
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": size,
            "platform": { "architecture": architecture, "os": "linux" },
        })
    };
    let (index_digest, index_size) = put(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            entry(&other_manifest, other_size, other_architecture),
            entry(host_manifest, host_manifest_size, host_architecture()),
        ],
    }));
    fs::write(
        Path::new(dir).join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": index_digest,
                "size": index_size,
                "annotations": { "org.opencontainers.image.ref.name": tag },
            }],
        }))
        .unwrap(),
    )
    .unwrap();
}

fn blob_count(shoal: &Shoal) -> usize {
    fs::read_dir(shoal.runtime_dir().join("blobs/sha256"))
        .unwrap()
        .count()
}

/// After a failed fetch: no name, no blob, no unpacked layer, nothing in tmp.
fn assert_store_empty(shoal: &Shoal) {
    assert_eq!(
        shoal.ok(&["image", "list", "--output", "json"]).trim(),
        "[]"
    );
    for dir in ["blobs/sha256", "layers", "tmp"] {
        let entries: Vec<_> = fs::read_dir(shoal.runtime_dir().join(dir))
            .unwrap()
            .flatten()
            .map(|entry| entry.file_name())
            .collect();
        assert!(entries.is_empty(), "{dir} holds {entries:?}");
    }
}

#[test]
fn images_pushed_by_skopeo_fetch_by_tag_and_digest_and_run() {
    require_container_support();
    let registry = Registry::start();
    let shoal = Shoal::new();
    let work = tempfile::tempdir().unwrap();
    let (layout, manifest_digest) = busybox_layout(work.path(), "1.0");
    registry.push(&layout, "tools/busybox:1.0", &[]);
    // The same image as docker's v2 schema 2 manifest (skopeo converts).
    registry.push(&layout, "docker-format:1.0", &["--format", "v2s2"]);
    let docker_digest = registry.tag_digest("docker-format", "1.0");
    assert_ne!(docker_digest, manifest_digest);

    let address = &registry.address;
    let reference = format!("{address}/tools/busybox:1.0");
    let output = shoal.ok(&["image", "fetch", "--insecure-registry", &reference]);
    assert_eq!(
        output.trim(),
        format!(
            "fetched {reference} {}",
            registry.tag_digest("tools/busybox", "1.0")
        )
    );
    // skopeo pushed the OCI manifest as it was, so its digest is the
    // layout's, and shoal stored the manifest byte for byte.
    assert!(output.trim().ends_with(&manifest_digest), "{output}");
    assert_eq!(
        shoal.ok(&["run", "--rm", INSECURE, &reference]),
        "default command\n"
    );
    assert_eq!(
        shoal.ok(&[
            "run",
            "--rm",
            INSECURE,
            &reference,
            "--",
            "sh",
            "-c",
            "echo $GREETING; pwd"
        ]),
        "hello from the image\n/tmp\n"
    );

    // Docker's media types: stored as served (the digest is the registry's),
    // and the same image to run.
    let docker_reference = format!("{address}/docker-format:1.0");
    let output = shoal.ok(&["image", "fetch", "--insecure-registry", &docker_reference]);
    assert_eq!(
        output.trim(),
        format!("fetched {docker_reference} {docker_digest}")
    );
    assert_eq!(
        shoal.ok(&["run", "--rm", INSECURE, &docker_reference]),
        "default command\n"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&shoal.ok(&["image", "inspect", &docker_reference])).unwrap();
    assert_eq!(
        inspect["manifest"]["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );

    // By digest: pinned, named with the digest as tag, or by --name. Nothing
    // new is stored for an image already there.
    let n_blobs = blob_count(&shoal);
    let by_digest = format!("{address}/tools/busybox@{manifest_digest}");
    let output = shoal.ok(&["image", "fetch", "--insecure-registry", &by_digest]);
    let hex = manifest_digest.trim_start_matches("sha256:");
    assert_eq!(
        output.trim(),
        format!("fetched {address}/tools/busybox:sha256-{hex} {manifest_digest}")
    );
    let output = shoal.ok(&[
        "image",
        "fetch",
        "--insecure-registry",
        &by_digest,
        "--name",
        "example.com/pinned:1",
    ]);
    assert_eq!(
        output.trim(),
        format!("fetched example.com/pinned:1 {manifest_digest}")
    );
    assert_eq!(blob_count(&shoal), n_blobs);
    assert_eq!(
        shoal.ok(&[
            "run",
            "--rm",
            INSECURE,
            "example.com/pinned:1",
            "--",
            "echo",
            "pinned"
        ]),
        "pinned\n"
    );
    // A digest the repository does not have.
    let error = shoal.fails(
        &[
            "image",
            "fetch",
            "--insecure-registry",
            &format!("{address}/tools/busybox@sha256:{}", "0".repeat(64)),
        ],
        1,
    );
    assert!(error.contains("not found in registry"), "{error}");
}

#[test]
fn a_multi_platform_index_fetches_this_machines_image() {
    require_container_support();
    let registry = Registry::start();
    let shoal = Shoal::new();
    let work = tempfile::tempdir().unwrap();
    let (layout, host_manifest) = busybox_layout(work.path(), "multi");
    make_multi_platform(&layout, &host_manifest);
    registry.push(&layout, "busybox:multi", &["--all"]);
    let index_digest = registry.tag_digest("busybox", "multi");
    assert_ne!(index_digest, host_manifest);

    let reference = format!("{}/busybox:multi", registry.address);
    let output = shoal.ok(&["image", "fetch", "--insecure-registry", &reference]);
    assert_eq!(
        output.trim(),
        format!("fetched {reference} {host_manifest}")
    );
    assert_eq!(
        shoal.ok(&["run", "--rm", INSECURE, &reference, "--", "echo", "multi"]),
        "multi\n"
    );
    // Only this platform's manifest, config and layer were stored.
    assert_eq!(blob_count(&shoal), 3);
}

#[test]
fn fetch_failures_are_one_line_and_store_nothing() {
    let registry = Registry::start();
    let shoal = Shoal::new();
    let work = tempfile::tempdir().unwrap();
    let (layout, _) = busybox_layout(work.path(), "1.0");
    registry.push(&layout, "busybox:1.0", &[]);
    let address = &registry.address;

    let error = shoal.fails(
        &[
            "image",
            "fetch",
            "--insecure-registry",
            &format!("{address}/busybox:2.0"),
        ],
        1,
    );
    assert_eq!(
        error.trim(),
        format!("error: image busybox:2.0 not found in registry {address}")
    );
    let error = shoal.fails(
        &[
            "image",
            "fetch",
            "--insecure-registry",
            &format!("{address}/nosuch:1.0"),
        ],
        1,
    );
    assert!(error.contains("not found in registry"), "{error}");

    // https (the default) to a plain-http registry: refused, with the way out.
    let error = shoal.fails(&["image", "fetch", &format!("{address}/busybox:1.0")], 1);
    assert!(error.contains("cannot talk https to registry"), "{error}");
    assert!(error.contains("--insecure-registry"), "{error}");
    let error = shoal.fails(
        &["image", "fetch", &format!("http://{address}/busybox:1.0")],
        1,
    );
    assert!(error.contains("without a scheme"), "{error}");

    // Nothing listening.
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let error = shoal.fails(
        &[
            "image",
            "fetch",
            "--insecure-registry",
            &format!("127.0.0.1:{closed_port}/busybox:1.0"),
        ],
        1,
    );
    assert_eq!(
        error.trim(),
        format!("error: cannot connect to registry 127.0.0.1:{closed_port}: connection refused")
    );
    // A host that cannot resolve (.invalid never does, RFC 2606).
    let error = shoal.fails(&["image", "fetch", "registry.invalid/busybox:1.0"], 1);
    assert!(
        error.contains("cannot resolve registry host registry.invalid"),
        "{error}"
    );
    let error = shoal.fails(&["image", "fetch", "--insecure-registry", "Bad Name"], 1);
    assert!(error.contains("invalid image reference"), "{error}");

    assert_store_empty(&shoal);
}

#[test]
fn tampered_blobs_in_the_registry_are_refused_and_nothing_is_stored() {
    let registry = Registry::start();
    let shoal = Shoal::new();
    let work = tempfile::tempdir().unwrap();
    let (layout, manifest_digest) = busybox_layout(work.path(), "1.0");
    registry.push(&layout, "busybox:1.0", &[]);
    registry.push(&layout, "busybox:also", &[]);
    let reference = format!("{}/busybox:1.0", registry.address);

    // One flipped byte in the middle of the layer, size unchanged.
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(registry.blob_file(&manifest_digest)).unwrap()).unwrap();
    let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();
    let layer_file = registry.blob_file(layer_digest);
    let original = fs::read(&layer_file).unwrap();
    let mut tampered = original.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff;
    fs::write(&layer_file, &tampered).unwrap();
    let error = shoal.fails(&["image", "fetch", "--insecure-registry", &reference], 1);
    assert!(
        error.contains(&format!(
            "blob {layer_digest} is corrupt: its content hashes to"
        )),
        "{error}"
    );
    assert_store_empty(&shoal);

    // A tampered manifest, fetched by tag and by digest.
    fs::write(&layer_file, &original).unwrap();
    let manifest_file = registry.blob_file(&manifest_digest);
    let mut bytes = fs::read(&manifest_file).unwrap();
    let position = bytes
        .windows(4)
        .position(|window| window == b"size")
        .unwrap();
    bytes[position] = b'S';
    fs::write(&manifest_file, &bytes).unwrap();
    for reference in [
        reference.clone(),
        format!("{}/busybox@{manifest_digest}", registry.address),
    ] {
        let error = shoal.fails(&["image", "fetch", "--insecure-registry", &reference], 1);
        assert!(
            error.contains(&format!("manifest {manifest_digest} from registry"))
                && error.contains("is corrupt"),
            "{error}"
        );
    }
    assert_store_empty(&shoal);
}

#[test]
fn pods_pull_by_policy_with_a_login() {
    use runtime::pod::{
        Ipv4Cidr, PodNetwork, PodRuntime, PodRuntimeOptions, PullPolicy, RegistryAuth,
    };
    require_container_support();
    // user "puller", password "s3cret" (bcrypt, cost 4).
    let registry = Registry::start_with_auth(Some(
        "puller:$2b$04$tGTRZmFOjB5hoI8UDWaFYOHm5pDXGe/yjy6Keaw8hsrHpQ/PqVLEK",
    ));
    let work = tempfile::tempdir().unwrap();
    let (layout, manifest_digest) = busybox_layout(work.path(), "1.0");
    registry.push(
        &layout,
        "tools/busybox:1.0",
        &["--dest-creds=puller:s3cret"],
    );
    let shoal = Shoal::new();
    let runtime = PodRuntime::open_with(
        shoal.data_dir.path(),
        PodNetwork {
            bridge: "shptreg".into(),
            pod_cidr: "10.231.80.0/24".parse::<Ipv4Cidr>().unwrap(),
            cluster_cidr: "10.231.0.0/16".parse().unwrap(),
            mtu: None,
        },
        PodRuntimeOptions {
            executable: None,
            insecure_registries: vec![registry.address.clone()],
            log_max_bytes: None,
            pod_pids_limit: None,
        },
    )
    .unwrap();
    let reference = format!("{}/tools/busybox:1.0", registry.address);
    let login = RegistryAuth {
        username: "puller".into(),
        password: "s3cret".into(),
    };

    let error = runtime
        .ensure_image(&reference, PullPolicy::IfNotPresent, None, true)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(&format!("cannot pull image {reference}: ")),
        "{error}"
    );
    assert!(error.contains("requires a login"), "{error}");
    let wrong = RegistryAuth {
        password: "wrong".into(),
        ..login.clone()
    };
    let error = runtime
        .ensure_image(&reference, PullPolicy::IfNotPresent, Some(&wrong), true)
        .unwrap_err()
        .to_string();
    assert!(error.contains("refused the login"), "{error}");

    let pulled = runtime
        .ensure_image(&reference, PullPolicy::IfNotPresent, Some(&login), true)
        .unwrap();
    assert_eq!(pulled.id, manifest_digest);
    assert_eq!(pulled.local_name, reference);
    assert_eq!(pulled.cmd, ["/bin/sh", "-c", "echo default command"]);
    // Present now: Never and IfNotPresent need no registry (nor login).
    for policy in [PullPolicy::Never, PullPolicy::IfNotPresent] {
        assert_eq!(
            runtime
                .ensure_image(&reference, policy, None, true)
                .unwrap()
                .id,
            manifest_digest
        );
    }

    // The tag moves to another image: IfNotPresent keeps the one it has,
    // Always fetches the new one.
    registry.push(
        &layout,
        "tools/busybox:1.0",
        &["--dest-creds=puller:s3cret", "--format", "v2s2"],
    );
    let moved = registry.tag_digest("tools/busybox", "1.0");
    assert_ne!(moved, manifest_digest);
    assert_eq!(
        runtime
            .ensure_image(&reference, PullPolicy::IfNotPresent, None, true)
            .unwrap()
            .id,
        manifest_digest
    );
    assert_eq!(
        runtime
            .ensure_image(&reference, PullPolicy::Always, Some(&login), true)
            .unwrap()
            .id,
        moved
    );
}

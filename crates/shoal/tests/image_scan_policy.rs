//! The image scan policy as a user meets it: `shoal run --scan-fail-on`
//! and the node agent of `shoal up --image-scan-fail-on` refuse an image
//! whose scan finds a vulnerability at or above the threshold, naming the
//! worst findings; the agent shows the refusal as the container's waiting
//! reason and as a Warning event on the pod. The image is the busybox test
//! image with one more layer holding a Debian package database.

mod common;
#[path = "common/machines.rs"]
mod machines;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};

const STATUS: &str = "\
Package: libfoo1
Status: install ok installed
Architecture: amd64
Source: foo (1.0-1)
Version: 1.0-1+b1

Package: foo-utils
Status: install ok installed
Architecture: amd64
Source: foo
Version: 1.0-1

Package: bar
Status: install ok installed
Architecture: all
Version: 2:3.1-4
";

/// The finding every refusal here names first.
const WORST: &str = "DSA-9999-1 in foo-utils 1.0-1 (high, fixed in 1.0-2)";

fn sha256_hex(path: &Path) -> String {
    // `sha256sum`, an implementation other than the binary's.
    let output = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(output.stdout).unwrap()[..64].to_string()
}

/// Writes at `layout` an OCI layout of the busybox archive's image with a
/// layer on top holding `/etc/os-release` (Debian 12) and a dpkg status.
fn vulnerable_layout(busybox_archive: &Path, layout: &Path) {
    fs::create_dir_all(layout).unwrap();
    let unpacked = Command::new("tar")
        .arg("-xf")
        .arg(busybox_archive)
        .arg("-C")
        .arg(layout)
        .status()
        .unwrap();
    assert!(unpacked.success());
    let blob = |digest: &str| layout.join("blobs/sha256").join(&digest[7..]);
    let put = |bytes: &[u8]| {
        let staged = layout.join("staged");
        fs::write(&staged, bytes).unwrap();
        let hex = sha256_hex(&staged);
        fs::rename(&staged, layout.join("blobs/sha256").join(&hex)).unwrap();
        format!("sha256:{hex}")
    };
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut manifest: Value =
        serde_json::from_slice(&fs::read(blob(&manifest_digest)).unwrap()).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let mut config: Value =
        serde_json::from_slice(&fs::read(blob(&config_digest)).unwrap()).unwrap();

    let mut builder = tar::Builder::new(Vec::new());
    for (path, text) in [
        (
            "etc/os-release",
            "ID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n",
        ),
        ("var/lib/dpkg/status", STATUS),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        builder
            .append_data(&mut header, path, text.as_bytes())
            .unwrap();
    }
    let layer = builder.into_inner().unwrap();
    let layer_digest = put(&layer);
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(json!(layer_digest));
    let config_bytes = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = json!(put(&config_bytes));
    manifest["config"]["size"] = json!(config_bytes.len());
    manifest["layers"].as_array_mut().unwrap().push(json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": layer_digest,
        "size": layer.len(),
    }));
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": put(&manifest_bytes), "size": manifest_bytes.len(),
    }]});
    fs::write(layout.join("index.json"), index.to_string()).unwrap();
}

fn shoal(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .env("SHOAL_DATA_DIR", data_dir)
        .args(args)
        .output()
        .expect("shoal runs")
}

fn shoal_ok(data_dir: &Path, args: &[&str]) -> String {
    let output = shoal(data_dir, args);
    assert!(
        output.status.success(),
        "shoal {}: {}",
        args.join(" "),
        common::describe_output(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Imports the vulnerable image as `vulnerable:1`, and an advisory rating
/// `foo` (the source of two of its packages) high.
fn import_image_and_advisory(work: &Path, busybox_archive: &Path, data_dir: &Path) {
    let layout = work.join("vulnerable-layout");
    vulnerable_layout(busybox_archive, &layout);
    shoal_ok(
        data_dir,
        &[
            "image",
            "import",
            "--name",
            "vulnerable:1",
            &format!("oci:{}", layout.display()),
        ],
    );
    let advisory = work.join("DSA-9999-1.json");
    fs::write(
        &advisory,
        json!({
            "id": "DSA-9999-1", "modified": "2026-01-01T00:00:00Z",
            "affected": [{"package": {"ecosystem": "Debian:12", "name": "foo"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.0-2"}]}],
                "ecosystem_specific": {"urgency": "high"}}],
        })
        .to_string(),
    )
    .unwrap();
    shoal_ok(
        data_dir,
        &["vulndb", "import", &advisory.display().to_string()],
    );
}

#[test]
fn shoal_run_refuses_an_image_at_or_above_scan_fail_on() {
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("data");
    let archive = work.path().join("busybox.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/busybox-image");
    let made = Command::new("python3")
        .arg(&script)
        .arg(&archive)
        .status()
        .unwrap();
    assert!(made.success());
    shoal_ok(
        &data_dir,
        &[
            "image",
            "import",
            "--name",
            "busybox:1",
            &format!("oci-archive:{}", archive.display()),
        ],
    );

    // With the policy on and no vulnerability data, nothing runs.
    let no_data = shoal(
        &data_dir,
        &[
            "run",
            "--scan-fail-on",
            "high",
            "--insecure-options",
            "image",
            "--net",
            "none",
            "--rm",
            "busybox:1",
            "true",
        ],
    );
    assert_eq!(no_data.status.code(), Some(1), "{no_data:?}");
    let stderr = String::from_utf8_lossy(&no_data.stderr);
    assert!(
        stderr.contains("there is no vulnerability data"),
        "{stderr}"
    );

    import_image_and_advisory(work.path(), &archive, &data_dir);
    let refused = shoal(
        &data_dir,
        &[
            "run",
            "--scan-fail-on",
            "high",
            "--insecure-options",
            "image",
            "--net",
            "none",
            "--rm",
            "vulnerable:1",
            "echo",
            "ran",
        ],
    );
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(refused.stdout.is_empty(), "{refused:?}");
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr),
        format!(
            "error: refused by --scan-fail-on high: image vulnerable:1 has 1 vulnerability at or above high severity: {WORST}\n"
        )
    );
    let containers: Value =
        serde_json::from_str(&shoal_ok(&data_dir, &["ps", "--output", "json"])).unwrap();
    assert_eq!(containers, json!([]), "a refused image leaves no container");

    // Below the threshold, and without the flag, the image runs.
    for flags in [&["--scan-fail-on", "critical"][..], &[][..]] {
        let mut args = vec!["run"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[
            "--insecure-options",
            "image",
            "--net",
            "none",
            "--rm",
            "vulnerable:1",
            "echo",
            "ran",
        ]);
        assert_eq!(shoal_ok(&data_dir, &args), "ran\n");
    }
}

#[test]
fn the_agent_refuses_a_pod_image_at_or_above_image_scan_fail_on() {
    let cluster = machines::Machines::start_with(0, &[], &["--image-scan-fail-on=high"]);
    let server_data = cluster.machines[0].data_dir.clone();
    let archive = cluster.dir.path().join("busybox.tar");
    import_image_and_advisory(cluster.dir.path(), &archive, &server_data);

    let pod = |name: &str, image: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: server\n  restartPolicy: Never\n  containers:\n  - {{name: main, image: '{image}', imagePullPolicy: Never, command: [sh, -c, 'exit 0']}}\n"
        )
    };
    cluster.apply(&pod("refused", "vulnerable:1"));
    // busybox:1 has no os-release: nothing matches, so it is allowed.
    cluster.apply(&pod("allowed", "busybox:1"));

    let reason_path = ".status.containerStatuses[0].state.waiting.reason";
    cluster.wait_until(
        &[
            "get",
            "pod",
            "refused",
            "-o",
            &format!("jsonpath={{{reason_path}}}"),
        ],
        Duration::from_secs(60),
        |reason| reason == "ImageScanRefused",
    );
    let message = cluster.pod_field(
        "refused",
        ".status.containerStatuses[0].state.waiting.message",
    );
    assert_eq!(
        message,
        format!("image vulnerable:1 has 1 vulnerability at or above high severity: {WORST}")
    );
    let events = cluster.wait_until(
        &["get", "events", "-o", "json"],
        Duration::from_secs(30),
        |text| text.contains("ImageScanRefused"),
    );
    let events: Value = serde_json::from_str(&events).unwrap();
    let refusals: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["reason"] == "ImageScanRefused")
        .collect();
    assert!(!refusals.is_empty());
    for event in refusals {
        assert_eq!(event["type"], "Warning", "{event}");
        assert_eq!(event["involvedObject"]["name"], "refused", "{event}");
        assert_eq!(event["message"], message.as_str(), "{event}");
    }
    cluster.wait_until(
        &["get", "pod", "allowed", "-o", "jsonpath={.status.phase}"],
        Duration::from_secs(60),
        |phase| phase == "Succeeded",
    );
    // Still refused, and never started.
    assert_eq!(
        cluster.pod_field("refused", reason_path),
        "ImageScanRefused"
    );
    assert_eq!(cluster.pod_field("refused", ".status.phase"), "Pending");
}

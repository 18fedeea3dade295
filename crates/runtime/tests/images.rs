//! The content store and trust, through the command line: import from an OCI
//! layout and a docker archive, list, inspect, rm, gc; corrupt and tampered
//! input; signatures (unsigned, untrusted, wrongly signed, valid).

mod common;

use std::fs;

use common::{Shoal, busybox_entries, layer_tar, write_docker_archive, write_oci_layout};

#[test]
fn oci_layout_and_docker_archive_import_list_inspect_rm_gc() {
    let shoal = Shoal::new();
    let layer = layer_tar(&busybox_entries());
    let layout = shoal.data_dir.path().join("layout");
    let manifest_hex = write_oci_layout(&layout, "1.0", std::slice::from_ref(&layer));

    let output = shoal.ok(&[
        "image",
        "import",
        &format!("oci:{}:1.0", layout.display()),
        "--name",
        "example.com/busybox:1.0",
    ]);
    assert_eq!(
        output.trim(),
        format!("imported example.com/busybox:1.0 sha256:{manifest_hex}")
    );
    // Importing again, under another tag, stores nothing new.
    let n_blobs = fs::read_dir(shoal.runtime_dir().join("blobs/sha256"))
        .unwrap()
        .count();
    shoal.ok(&[
        "image",
        "import",
        &format!("oci:{}", layout.display()),
        "--name",
        "example.com/busybox:stable",
    ]);
    assert_eq!(
        fs::read_dir(shoal.runtime_dir().join("blobs/sha256"))
            .unwrap()
            .count(),
        n_blobs
    );

    let archive = shoal.data_dir.path().join("saved.tar");
    write_docker_archive(&archive, "tools:2", &[layer]);
    let output = shoal.ok(&[
        "image",
        "import",
        &format!("docker-archive:{}", archive.display()),
    ]);
    assert!(output.starts_with("imported tools:2 sha256:"), "{output}");

    let listing: serde_json::Value =
        serde_json::from_str(&shoal.ok(&["image", "list", "--output", "json"])).unwrap();
    let rows = listing.as_array().unwrap();
    let names: Vec<String> = rows
        .iter()
        .map(|row| {
            format!(
                "{}:{}",
                row["name"].as_str().unwrap(),
                row["tag"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            "example.com/busybox:1.0",
            "example.com/busybox:stable",
            "tools:2"
        ]
    );
    assert!(
        rows.iter()
            .all(|row| row["size_bytes"].as_u64().unwrap() > 500_000)
    );
    assert_eq!(rows[0]["digest"], format!("sha256:{manifest_hex}"));
    assert_eq!(rows[0]["created"], "2026-01-01T00:00:00Z");
    let table = shoal.ok(&["image", "list"]);
    assert!(table.starts_with("NAME "), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");

    let inspect: serde_json::Value =
        serde_json::from_str(&shoal.ok(&["image", "inspect", "tools:2"])).unwrap();
    assert_eq!(inspect["config"]["config"]["WorkingDir"], "/tmp");
    assert_eq!(inspect["manifest"]["layers"].as_array().unwrap().len(), 1);
    // By unique digest prefix too.
    shoal.ok(&["image", "inspect", &manifest_hex[..12]]);

    // Removing one of two names keeps the blobs; removing the last frees them.
    let output = shoal.ok(&["image", "rm", "example.com/busybox:1.0"]);
    assert_eq!(output.trim(), "untagged example.com/busybox:1.0");
    shoal.ok(&["image", "inspect", "example.com/busybox:stable"]);
    let output = shoal.ok(&["image", "rm", "example.com/busybox:stable"]);
    assert!(output.contains("deleted 2 blobs"), "{output}");
    shoal.ok(&["image", "rm", "tools:2"]);
    assert_eq!(
        fs::read_dir(shoal.runtime_dir().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        fs::read_dir(shoal.runtime_dir().join("layers"))
            .unwrap()
            .count(),
        0
    );

    // gc removes what an interrupted import left behind.
    fs::write(shoal.runtime_dir().join("tmp/blob-leftover"), b"partial").unwrap();
    shoal.ok(&["image", "gc"]);
    assert_eq!(
        fs::read_dir(shoal.runtime_dir().join("tmp"))
            .unwrap()
            .count(),
        0
    );

    let error = shoal.fails(&["image", "inspect", "tools:2"], 1);
    assert!(error.contains("image tools:2 not found"), "{error}");
}

#[test]
fn corrupt_sources_are_refused_and_leave_nothing_behind() {
    let shoal = Shoal::new();
    let layer = layer_tar(&busybox_entries());

    // A truncated docker archive.
    let archive = shoal.data_dir.path().join("saved.tar");
    write_docker_archive(&archive, "tools:2", std::slice::from_ref(&layer));
    let bytes = fs::read(&archive).unwrap();
    fs::write(&archive, &bytes[..bytes.len() / 2]).unwrap();
    let error = shoal.fails(
        &[
            "image",
            "import",
            &format!("docker-archive:{}", archive.display()),
        ],
        1,
    );
    assert!(error.contains("not a valid docker-archive"), "{error}");

    // A layout whose layer blob does not match its digest.
    let layout = shoal.data_dir.path().join("layout");
    write_oci_layout(&layout, "latest", &[layer]);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_hex = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(&manifest_hex)).unwrap())
            .unwrap();
    let layer_hex = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let layer_path = layout.join("blobs/sha256").join(layer_hex);
    let mut layer_bytes = fs::read(&layer_path).unwrap();
    let middle = layer_bytes.len() / 2;
    layer_bytes[middle] ^= 0xff;
    fs::write(&layer_path, layer_bytes).unwrap();
    let error = shoal.fails(
        &[
            "image",
            "import",
            &format!("oci:{}", layout.display()),
            "--name",
            "bad",
        ],
        1,
    );
    assert!(
        error.contains("is corrupt: its content hashes to"),
        "{error}"
    );

    let error = shoal.fails(&["image", "import", "oci:/nonexistent/layout"], 1);
    assert!(error.contains("not an OCI image layout"), "{error}");
    let error = shoal.fails(&["image", "import", "docker://busybox"], 1);
    assert!(
        error.contains("unsupported image source transport"),
        "{error}"
    );

    assert_eq!(
        shoal.ok(&["image", "list", "--output", "json"]).trim(),
        "[]"
    );
    assert_eq!(
        fs::read_dir(shoal.runtime_dir().join("tmp"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        fs::read_dir(shoal.runtime_dir().join("layers"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn trust_keys_and_signatures() {
    let shoal = Shoal::new();
    let keys = shoal.data_dir.path();
    let alice = keys.join("alice.pem");
    let mallory = keys.join("mallory.pem");
    shoal.ok(&["trust", "keygen", alice.to_str().unwrap()]);
    shoal.ok(&["trust", "keygen", mallory.to_str().unwrap()]);
    let alice_pub = format!("{}.pub", alice.display());
    let mallory_pub = format!("{}.pub", mallory.display());

    let error = shoal.fails(
        &[
            "trust",
            "add",
            "--prefix",
            "example.com",
            alice.to_str().unwrap(),
        ],
        1,
    );
    assert!(error.contains("is a private key"), "{error}");
    let output = shoal.ok(&["trust", "add", "--prefix", "example.com/app", &alice_pub]);
    assert!(output.starts_with("trusted key sha256:"), "{output}");
    shoal.ok(&["trust", "add", "--root", &mallory_pub]);
    let listing: serde_json::Value =
        serde_json::from_str(&shoal.ok(&["trust", "list", "--output", "json"])).unwrap();
    let prefixes: Vec<&str> = listing
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["prefix"].as_str().unwrap())
        .collect();
    assert_eq!(prefixes, ["example.com/app", "*"]);
    let mallory_fingerprint = listing[1]["fingerprint"].as_str().unwrap().to_string();
    let output = shoal.ok(&["trust", "rm", &mallory_fingerprint[..20]]);
    assert!(output.contains("removed key"), "{output}");
    assert_eq!(shoal.ok(&["trust", "list"]).lines().count(), 2);

    shoal.import_busybox("example.com/app:1");
    let output = shoal.ok(&[
        "image",
        "sign",
        "example.com/app:1",
        "--key",
        mallory.to_str().unwrap(),
    ]);
    assert!(
        output.starts_with("signed example.com/app (sha256:"),
        "{output}"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&shoal.ok(&["image", "inspect", "example.com/app:1"])).unwrap();
    assert_eq!(inspect["signatures"].as_array().unwrap().len(), 1);
    let error = shoal.fails(
        &["image", "sign", "example.com/app:1", "--key", &alice_pub],
        1,
    );
    assert!(error.contains("not an ed25519 private key"), "{error}");
}

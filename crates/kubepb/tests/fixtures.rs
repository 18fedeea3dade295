//! Conformance against kubectl: each `tests/fixtures/<name>.pb` is a body
//! kubectl 1.32 sent as protobuf, and `<name>.json` the body kubectl 1.31
//! sent as JSON for the same command (`tools/capture_fixtures.py` remakes
//! both). Decoding the first must give the second. Nothing is normalised:
//! `serde_json::Value` equality already ignores key order and whitespace.

use std::path::Path;

fn fixture_names() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/fixtures exists")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".pb").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

fn read(name: &str, extension: &str) -> Vec<u8> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.{extension}"));
    std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

#[test]
fn protobuf_bodies_decode_to_the_json_kubectl_sends() {
    let names = fixture_names();
    assert!(names.len() >= 7, "fixtures missing: {names:?}");
    let mut failures = Vec::new();
    for name in &names {
        let expected: serde_json::Value =
            serde_json::from_slice(&read(name, "json")).expect("fixture JSON parses");
        match kubepb::decode(&read(name, "pb")) {
            Ok(decoded) => {
                if decoded.object != expected {
                    failures.push(format!(
                        "{name}:\n  decoded  {}\n  expected {}",
                        serde_json::to_string(&decoded.object).unwrap_or_default(),
                        serde_json::to_string(&expected).unwrap_or_default()
                    ));
                }
                assert_eq!(
                    Some(decoded.kind.as_str()),
                    expected["kind"].as_str(),
                    "{name}"
                );
                assert_eq!(
                    Some(decoded.api_version.as_str()),
                    expected["apiVersion"].as_str(),
                    "{name}"
                );
            }
            Err(err) => failures.push(format!("{name}: {err}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures differ:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n")
    );
}

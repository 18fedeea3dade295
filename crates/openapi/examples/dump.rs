//! Writes the `/openapi/v3` index and every group-version document for the
//! resources of `tests/served` into a folder (with `resources.json`, the list
//! itself), for `tools/kubectl_check.py`.
//! `cargo run -p openapi --example dump -- DIR`

#[path = "../tests/served/mod.rs"]
mod served;

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let folder = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "openapi-v3".into()),
    );
    let resources = served::resources();
    std::fs::create_dir_all(&folder)?;
    // The served resources, for the test server's discovery answers.
    let listed: Vec<serde_json::Value> = resources
        .iter()
        .map(|resource| {
            serde_json::json!({
                "group": resource.group,
                "version": resource.version,
                "kind": resource.kind,
                "plural": resource.plural,
                "namespaced": resource.namespaced,
                "subresources": resource.subresources,
            })
        })
        .collect();
    std::fs::write(folder.join("resources.json"), serde_json::to_vec(&listed)?)?;
    std::fs::write(folder.join("v2.pb"), openapi::v2_protobuf(&resources))?;
    let index = openapi::v3_index(&resources);
    std::fs::write(folder.join("index.json"), serde_json::to_vec(&index)?)?;
    let mut group_versions: Vec<(String, String)> = resources
        .iter()
        .map(|resource| (resource.group.clone(), resource.version.clone()))
        .collect();
    group_versions.dedup();
    for (group, version) in group_versions {
        if let Some(document) = openapi::v3_document(&resources, &group, &version) {
            let path = openapi::group_version_path(&group, &version);
            let file = folder.join(format!("{}.json", path.replace('/', "__")));
            std::fs::write(&file, serde_json::to_vec(&document)?)?;
            println!("{}", file.display());
        }
    }
    Ok(())
}

//! Compiles the vendored upstream `generated.proto` files into one
//! FileDescriptorSet (`$OUT_DIR/k8s.fds`), which the crate embeds and decodes
//! messages against at run time. protoc comes from `protoc-bin-vendored`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut protos = Vec::new();
    collect_protos(Path::new("proto"), &mut protos)?;
    protos.sort();
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("k8s.fds");
    // Paths relative to `proto/` are the names the files import each other by.
    let relative: Vec<&Path> = protos
        .iter()
        .map(|path| path.strip_prefix("proto").expect("collected under proto/"))
        .collect();
    let status = Command::new(protoc)
        .arg("--proto_path=proto")
        .arg("--include_imports")
        .arg(format!("--descriptor_set_out={}", out.display()))
        .args(&relative)
        .status()?;
    if !status.success() {
        return Err(format!("protoc failed: {status}").into());
    }
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}

fn collect_protos(dir: &Path, protos: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, protos)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            protos.push(path);
        }
    }
    Ok(())
}

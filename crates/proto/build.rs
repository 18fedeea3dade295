//! Generates the etcd v3 wire types and gRPC service code from `proto/`.
//! protoc comes from the `protoc-bin-vendored` crate, so nothing is installed by hand.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single-threaded, so setting the variable is sound.
    unsafe_env_set(&protoc);
    tonic_prost_build::configure().bytes(".").compile_protos(
        &[
            "proto/kv.proto",
            "proto/auth.proto",
            "proto/rpc.proto",
            "proto/shoal.proto",
            "proto/v3lock.proto",
            "proto/v3election.proto",
        ],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}

#[allow(unsafe_code)]
fn unsafe_env_set(protoc: &std::path::Path) {
    // Edition 2024 marks set_var unsafe because other threads may read the
    // environment at the same time; a build script has no other threads.
    unsafe { std::env::set_var("PROTOC", protoc) };
}

//! Compiles `proto/plugbay/plugin/v1/*.proto` (the process-plugin contract) and
//! `proto/plugbay/host/v1/*.proto` (the daemon's API) with `protox` (a pure-Rust protobuf
//! compiler, so no `protoc` is needed) and generates the tonic clients and servers.

use std::env;
use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

/// The import root, relative to this crate.
const PROTO_ROOT: &str = "../../proto";
/// The package directory compiled into `plugbay_proto::plugin::v1`, relative to [`PROTO_ROOT`].
const PLUGIN_V1_DIR: &str = "plugbay/plugin/v1";
/// The package directory compiled into `plugbay_proto::host::v1`, relative to [`PROTO_ROOT`].
const HOST_V1_DIR: &str = "plugbay/host/v1";

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir.join(PROTO_ROOT);
    let mut files = Vec::new();
    for package in [PLUGIN_V1_DIR, HOST_V1_DIR] {
        let dir = root.join(package);
        // Rerun only when a proto file changes (the directory entry catches added/removed files).
        println!("cargo:rerun-if-changed={}", dir.display());
        for name in proto_files(&dir)? {
            println!("cargo:rerun-if-changed={}", dir.join(&name).display());
            // protox names files relative to the import root, as `import` statements do.
            files.push(format!("{package}/{name}"));
        }
    }

    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(&files)?;
    let fds = compiler.file_descriptor_set();

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // Without source info: the set is for reflection, comments would only add weight.
    let mut reflection = protox::Compiler::new([&root])?;
    reflection.include_imports(true).include_source_info(false);
    reflection.open_files(&files)?;
    fs::write(out_dir.join("plugbay_descriptor.bin"), reflection.encode_file_descriptor_set())?;

    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}

/// The names of the `.proto` files directly in `dir`, sorted so the output does not depend on
/// readdir order.
fn proto_files(dir: &Path) -> Result<Vec<String>, Box<dyn Error>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "proto")
            && let Some(name) = path.file_name().and_then(|name| name.to_str())
        {
            files.push(name.to_owned());
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(format!("no .proto files in {}", dir.display()).into());
    }
    Ok(files)
}

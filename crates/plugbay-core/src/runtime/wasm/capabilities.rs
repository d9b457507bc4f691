//! What a wasm plugin may touch, from its manifest's `[permissions]`, and nothing by
//! default: directories preopened from `read` / `write` (read-only where only read is
//! granted), environment variables named in `env`, sockets only with `network = true`, no
//! arguments and no stdin. The guest's stdout and stderr become host log lines tagged with
//! the plugin id (bounded, escaped and rate-limited like a process plugin's output).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::OutputStream;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use crate::error::{Code, Error, Result};
use crate::manifest::Permissions;
use crate::runtime::process::output;

/// Bytes a guest may write to stdout or stderr before a write waits for the log pump.
const OUTPUT_BUDGET: usize = 64 << 10;
/// Interface namespaces every component may import (the plugbay host API and the parts of
/// WASI that grant nothing by themselves: clocks, random, cli, io, filesystem without
/// preopens).
const WASI_SOCKETS: &str = "wasi:sockets/";

/// A plugin's grants, resolved against its folder at load time.
pub(crate) struct Grants {
    /// `(host directory, guest path, permissions)`.
    preopens: Vec<(PathBuf, String, FsPerms)>,
    env: Vec<(String, String)>,
    network: bool,
    stdout: LogStream,
    stderr: LogStream,
}

impl Grants {
    /// Resolves `permissions` against the plugin `folder`: every granted path must be a
    /// directory inside the folder (symlinks that leave it are refused). Starts the log
    /// pumps of the guest's stdout and stderr (they end when the last instance is gone).
    ///
    /// # Errors
    /// `failed_precondition` naming the `permissions.*` field of a path that is missing or
    /// leaves the folder.
    pub(crate) fn resolve(permissions: &Permissions, folder: &Path, plugin: &Arc<str>) -> Result<Grants> {
        let root = folder.canonicalize().map_err(|error| {
            Error::precondition(format!("cannot resolve the plugin folder {}: {error}", folder.display()))
        })?;
        let mut granted: BTreeMap<&str, (FsPerms, String)> = BTreeMap::new();
        for (name, paths, perms) in [
            ("read", &permissions.read, FsPerms::ReadOnly),
            ("write", &permissions.write, FsPerms::ReadWrite),
        ] {
            for (index, path) in paths.iter().enumerate() {
                let field = format!("permissions.{name}[{index}]");
                let entry = granted.entry(path.as_str()).or_insert((perms, field));
                if perms == FsPerms::ReadWrite {
                    entry.0 = FsPerms::ReadWrite;
                }
            }
        }
        let mut preopens = Vec::new();
        for (path, (perms, field)) in granted {
            let host = root.join(path).canonicalize().map_err(|error| {
                Error::precondition(format!("granted directory {path:?} cannot be opened: {error}"))
                    .with_field(&field)
            })?;
            if !host.starts_with(&root) || !host.is_dir() {
                return Err(Error::new(
                    Code::PermissionDenied,
                    format!("granted path {path:?} is not a directory inside the plugin folder"),
                )
                .with_field(&field));
            }
            preopens.push((host, path.trim_end_matches('/').to_owned(), perms));
        }
        let env = permissions
            .env
            .iter()
            .filter_map(|name| std::env::var(name).ok().map(|value| (name.clone(), value)))
            .collect();
        Ok(Grants {
            preopens,
            env,
            network: permissions.network,
            stdout: LogStream::start(plugin.clone(), "stdout"),
            stderr: LogStream::start(plugin.clone(), "stderr"),
        })
    }

    /// Refuses a component that imports an interface it was not granted, naming the import.
    ///
    /// # Errors
    /// `permission_denied` for `wasi:sockets/*` without `permissions.network = true`.
    pub(crate) fn check_imports(&self, component: &Component, engine: &Engine) -> Result<()> {
        for (name, _) in component.component_type().imports(engine) {
            if name.starts_with(WASI_SOCKETS) && !self.network {
                return Err(Error::new(
                    Code::PermissionDenied,
                    format!("the component imports `{name}`, which its manifest does not grant (permissions.network = false)"),
                )
                .with_field("permissions.network"));
            }
        }
        Ok(())
    }

    /// A fresh WASI context with exactly these grants (one per store).
    ///
    /// # Errors
    /// `internal` when a granted directory cannot be opened any more.
    pub(crate) fn wasi(&self) -> Result<WasiCtx> {
        let mut builder = WasiCtxBuilder::new();
        builder.stdout(self.stdout.clone()).stderr(self.stderr.clone());
        for (host, guest, perms) in &self.preopens {
            builder.preopened_dir(host, guest, *perms).map_err(|error| {
                Error::internal(format!("cannot open granted directory {}: {error}", host.display()))
            })?;
        }
        builder.envs(&self.env);
        if self.network {
            builder.inherit_network().allow_ip_name_lookup(true);
        } else {
            builder.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
        }
        Ok(builder.build())
    }
}

/// One of the guest's output streams, shared by all its instances and pumped into the log.
#[derive(Clone)]
struct LogStream(Arc<wasmtime_wasi::cli::AsyncStdoutStream>);

impl LogStream {
    fn start(plugin: Arc<str>, stream: &'static str) -> LogStream {
        let (writer, reader) = tokio::io::duplex(OUTPUT_BUDGET);
        tokio::spawn(output::pump(output::LineReader::new(reader), plugin, stream, None));
        LogStream(Arc::new(wasmtime_wasi::cli::AsyncStdoutStream::new(OUTPUT_BUDGET, writer)))
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        self.0.p2_stream()
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        self.0.async_stream()
    }
}

//! Generated gRPC code for plugbay's process-plugin contract, `proto/plugbay/plugin/v1`, the
//! daemon's API, `proto/plugbay/host/v1`, and
//! nothing else: the messages (prost), the client and server of `PluginService` (served by a
//! plugin program) and of `HostService` (served by the host back to the plugin), the standard
//! health service (`grpc.health.v1`, re-exported from [`tonic_health`]), and
//! [`connect_unix`], the one way the host and the SDK dial a Unix socket.
//!
//! The wire contract around these services (environment, handshake line, timeouts, shutdown)
//! is `docs/process-protocol.md`; the parts of it both sides spell are written once here:
//! [`handshake`] (environment names, cookie, protocol version, handshake line), [`framed`]
//! (the lean transport's frames) and [`log_level`] / [`log_level_number`] (the log levels of
//! `LogRequest`).
//!
//! ```no_run
//! use plugbay_proto::plugin::v1::plugin_service_client::PluginServiceClient;
//! use plugbay_proto::plugin::v1::DescribeRequest;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let channel = plugbay_proto::connect_unix("/run/plugbay/x/plugin.sock").await?;
//! let mut client = PluginServiceClient::new(channel);
//! let described = client.describe(DescribeRequest {}).await?.into_inner();
//! println!("{} {}", described.id, described.version);
//! # Ok(())
//! # }
//! ```
//!
//! The crate re-exports [`tonic`], [`prost`] and [`tonic_health`] so every runtime uses the
//! versions these types were generated for.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

pub mod framed;
pub mod handshake;

pub use prost;
pub use tonic;
pub use tonic_health;

/// The process-plugin contract, package `plugbay.plugin.v1`.
pub mod plugin {
    /// Version 1 of the contract: `PluginService`, `HostService` and their messages.
    ///
    /// Clients live in [`plugin_service_client`](v1::plugin_service_client) and
    /// [`host_service_client`](v1::host_service_client), servers in
    /// [`plugin_service_server`](v1::plugin_service_server) and
    /// [`host_service_server`](v1::host_service_server).
    pub mod v1 {
        // Generated code: its docs are the proto comments, which not every message and field
        // has and which are not markdown (`"plugin:<id>"` reads as an HTML tag), and its shape
        // is prost's and tonic's, not ours to lint.
        #![allow(missing_docs, rustdoc::all, clippy::all, clippy::pedantic)]
        tonic::include_proto!("plugbay.plugin.v1");
    }
}

/// The daemon's API (`plugbay run`), package `plugbay.host.v1`.
pub mod host {
    /// Version 1: `HostApi` (calls, plugin management, events) and its messages. The client is
    /// [`host_api_client`](v1::host_api_client), the server [`host_api_server`](v1::host_api_server).
    pub mod v1 {
        // Generated code: see `plugin::v1`.
        #![allow(missing_docs, rustdoc::all, clippy::all, clippy::pedantic)]
        tonic::include_proto!("plugbay.host.v1");
    }
}

/// The encoded `FileDescriptorSet` of every file compiled into [`plugin`] and [`host`] (imports included,
/// source info left out), for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/plugbay_descriptor.bin"));

/// The gRPC service name a plugin's health service must report `SERVING` for once it is ready.
pub const PLUGIN_SERVICE_NAME: &str = plugin::v1::plugin_service_server::SERVICE_NAME;

/// Largest gRPC message (and framed body) sent or received, either way: 64 MiB.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The level of a `LogRequest.level` number; an unknown number is `Info`.
pub fn log_level(number: i32) -> plugbay_abi::LogLevel {
    use plugbay_abi::LogLevel;
    use plugin::v1::log_request::Level;
    match Level::try_from(number).unwrap_or(Level::Info) {
        Level::Error => LogLevel::Error,
        Level::Warn => LogLevel::Warn,
        Level::Debug => LogLevel::Debug,
        Level::Trace => LogLevel::Trace,
        _ => LogLevel::Info,
    }
}

/// The `LogRequest.level` number of a level.
pub fn log_level_number(level: plugbay_abi::LogLevel) -> i32 {
    use plugbay_abi::LogLevel;
    use plugin::v1::log_request::Level;
    let level = match level {
        LogLevel::Error => Level::Error,
        LogLevel::Warn => Level::Warn,
        LogLevel::Info => Level::Info,
        LogLevel::Debug => Level::Debug,
        LogLevel::Trace => Level::Trace,
    };
    level as i32
}

/// Opens a gRPC channel (HTTP/2 cleartext) to a server listening on the Unix socket `path`.
///
/// tonic's `Endpoint` only dials TCP by itself, so the channel is built with
/// [`Endpoint::connect_with_connector`] and a connector made with [`tower::service_fn`] that
/// ignores the URI, opens a [`UnixStream`] to `path`, and wraps it in [`TokioIo`] (hyper's
/// adapter from tokio's I/O traits). The endpoint URI is a placeholder (`http://[::]:50051`)
/// that is never resolved; it only supplies the scheme and `:authority` of each request.
///
/// The connection is made before this returns (the socket must already be listening), and the
/// channel reconnects through the same connector if the connection drops. Calls may run
/// concurrently on one channel; clone it freely (clones share the connection).
///
/// # Errors
///
/// Returns a transport error if the socket cannot be connected (it does not exist, nobody
/// listens, permission is denied) or the HTTP/2 connection cannot be set up.
pub async fn connect_unix(path: impl AsRef<Path>) -> Result<Channel, tonic::transport::Error> {
    let path: PathBuf = path.as_ref().to_path_buf();
    Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}

#[cfg(test)]
mod tests {
    use plugbay_abi::LogLevel;

    #[test]
    fn log_levels_cross_the_log_request_both_ways() {
        for level in LogLevel::ALL {
            assert_eq!(super::log_level(super::log_level_number(level)), level);
        }
        assert_eq!(super::log_level(0), LogLevel::Info, "unspecified");
        assert_eq!(super::log_level(99), LogLevel::Info, "unknown");
    }
}

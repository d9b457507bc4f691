//! The start of the process-plugin protocol (docs/process-protocol.md, sections 1 and 2),
//! written once for the host and the SDK: the environment the host sets, the magic cookie,
//! the protocol version, the transport names and the handshake line.
//!
//! ```
//! use plugbay_proto::handshake::{self, TRANSPORT_FRAMED};
//!
//! let line = handshake::line(handshake::PROTOCOL_VERSION, "/tmp/x/plugin.sock".as_ref(), TRANSPORT_FRAMED);
//! assert_eq!(line, "plugbay|1|unix|/tmp/x/plugin.sock|framed");
//! ```

use std::path::Path;

/// The protocol version this crate describes (the highest the host offers).
pub const PROTOCOL_VERSION: u32 = 1;
/// Every protocol version the host speaks, highest last.
pub const PROTOCOL_VERSIONS: &[u32] = &[PROTOCOL_VERSION];
/// The magic value in [`env::COOKIE`]: proof the program was started by plugbay (not a
/// secret).
pub const COOKIE: &str = "d6f2c0a4-plugbay-process-plugin";
/// The handshake's transport name for gRPC over HTTP/2.
pub const TRANSPORT_GRPC: &str = "grpc";
/// The handshake's transport name for the framed transport ([`crate::framed`]).
pub const TRANSPORT_FRAMED: &str = "framed";

/// The names of the environment variables the host sets for a process plugin.
pub mod env {
    /// The magic cookie, [`super::COOKIE`].
    pub const COOKIE: &str = "PLUGBAY_PLUGIN_COOKIE";
    /// The protocol versions the host speaks, comma-separated (`1`).
    pub const PROTOCOL_VERSIONS: &str = "PLUGBAY_PROTOCOL_VERSIONS";
    /// The transports the host accepts, comma-separated (`framed,grpc`).
    pub const TRANSPORTS: &str = "PLUGBAY_TRANSPORTS";
    /// The optional framed features the host speaks, comma-separated (`host-calls`); set
    /// only when framed is offered.
    pub const FRAMED_FEATURES: &str = "PLUGBAY_FRAMED_FEATURES";
    /// The Unix socket the plugin must listen on.
    pub const SOCKET: &str = "PLUGBAY_SOCKET";
    /// The Unix socket where the host serves `HostService` for this plugin.
    pub const HOST_SOCKET: &str = "PLUGBAY_HOST_SOCKET";
    /// The plugin id.
    pub const PLUGIN_ID: &str = "PLUGBAY_PLUGIN_ID";
}

/// The handshake line (without its `\n`): `plugbay|<version>|unix|<socket>|<transport>`.
pub fn line(version: u32, socket: &Path, transport: &str) -> String {
    format!("plugbay|{version}|unix|{}|{transport}", socket.display())
}

/// Whether a comma-separated list (an environment value) holds `item` (spaces around
/// items are ignored).
pub fn lists(list: &str, item: &str) -> bool {
    list.split(',').any(|entry| entry.trim() == item)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_match_whole_items_only() {
        assert!(lists("framed,grpc", TRANSPORT_GRPC));
        assert!(lists("framed, grpc", TRANSPORT_GRPC));
        assert!(!lists("grpcx", TRANSPORT_GRPC));
        assert!(!lists("", TRANSPORT_FRAMED));
    }
}

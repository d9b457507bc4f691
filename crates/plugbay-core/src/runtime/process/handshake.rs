//! The handshake line a process plugin prints once it listens:
//! `plugbay|<version>|unix|<socket path>|grpc` (docs/process-protocol.md).

use std::path::Path;

use plugbay_proto::handshake::{PROTOCOL_VERSIONS, TRANSPORT_FRAMED, TRANSPORT_GRPC};

use crate::error::{Code, Error, Result};

/// The magic value in `PLUGBAY_PLUGIN_COOKIE`: proof the program was started by plugbay.
pub const PLUGIN_COOKIE: &str = plugbay_proto::handshake::COOKIE;
/// How much of an unexpected line an error quotes.
const QUOTE_BYTES: usize = 200;

/// How the host and the plugin talk after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// gRPC over HTTP/2 (every language).
    Grpc,
    /// Length-prefixed protobuf frames multiplexed by call id (the Rust SDK).
    Framed,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Grpc => TRANSPORT_GRPC,
            Transport::Framed => TRANSPORT_FRAMED,
        }
    }
}

/// The offered transports as the environment spells them (`framed,grpc`).
pub(crate) fn offered_transports(offered: &[Transport]) -> String {
    offered.iter().map(|t| t.name()).collect::<Vec<_>>().join(",")
}

/// The offered versions as the environment spells them (`1` or `1,2`).
pub(crate) fn offered_versions() -> String {
    PROTOCOL_VERSIONS.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// Quotes the start of what the plugin printed.
pub(crate) fn quote(line: &str) -> String {
    let mut end = line.len().min(QUOTE_BYTES);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    let more = if end < line.len() { "..." } else { "" };
    format!("{:?}{more}", &line[..end])
}

/// Checks the handshake line against what the host offered and assigned; returns the
/// protocol version the plugin chose.
///
/// # Errors
/// `failed_precondition` for a malformed line, an unoffered version or protocol;
/// `permission_denied` for another network, or a socket other than the one the host
/// assigned.
pub(crate) fn check(line: &str, assigned_socket: &Path, offered: &[Transport]) -> Result<(u32, Transport)> {
    let expected = "`plugbay|<version>|unix|<socket path>|grpc`";
    let fields: Vec<&str> = line.split('|').collect();
    if fields.len() != 5 || fields[0] != "plugbay" {
        return Err(Error::precondition(format!(
            "expected the handshake line {expected} but the plugin printed {}",
            quote(line)
        )));
    }
    let version: u32 = fields[1].parse().map_err(|_| {
        Error::precondition(format!(
            "the handshake's version {:?} is not a number: {}",
            fields[1],
            quote(line)
        ))
    })?;
    if !PROTOCOL_VERSIONS.contains(&version) {
        return Err(Error::precondition(format!(
            "no common protocol version: the plugin chose {version}, the host offers {}",
            offered_versions()
        )));
    }
    if fields[2] != "unix" {
        return Err(Error::denied(format!(
            "the handshake names network {:?}; the host only accepts the unix socket it assigned",
            fields[2]
        )));
    }
    if Path::new(fields[3]) != assigned_socket {
        return Err(Error::denied(format!(
            "the handshake names socket {:?}, but the host assigned {:?}; it connects only there",
            fields[3],
            assigned_socket.display().to_string()
        )));
    }
    let Some(transport) = offered.iter().copied().find(|t| t.name() == fields[4]) else {
        return Err(Error::precondition(format!(
            "the handshake names protocol {:?}; the host offered {}",
            fields[4],
            offered_transports(offered)
        )));
    };
    Ok((version, transport))
}

/// Checks that the assigned socket exists, is a socket (not a link or a file), and belongs
/// to the host's user.
///
/// # Errors
/// `permission_denied` naming what is wrong.
pub(crate) fn check_socket(path: &Path, owner: u32) -> Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let metadata = std::fs::symlink_metadata(path).map_err(|error| {
        Error::unavailable(format!("the plugin's socket {} is not there: {error}", path.display()))
    })?;
    if !metadata.file_type().is_socket() {
        return Err(Error::denied(format!("{} is not a Unix socket", path.display())));
    }
    if metadata.uid() != owner {
        return Err(Error::new(
            Code::PermissionDenied,
            format!("{} belongs to uid {}, not the program's uid {owner}", path.display(), metadata.uid()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_lines_are_checked_field_by_field() {
        let socket = Path::new("/tmp/x/plugin.sock");
        let both = [Transport::Framed, Transport::Grpc];
        assert_eq!(
            check("plugbay|1|unix|/tmp/x/plugin.sock|grpc", socket, &both).unwrap(),
            (1, Transport::Grpc)
        );
        assert_eq!(
            check("plugbay|1|unix|/tmp/x/plugin.sock|framed", socket, &both).unwrap(),
            (1, Transport::Framed)
        );
        let error =
            check("plugbay|1|unix|/tmp/x/plugin.sock|framed", socket, &[Transport::Grpc]).unwrap_err();
        assert!(error.to_string().contains("offered grpc"), "{error}");
        let cases = [
            ("hello world", Code::FailedPrecondition, "\"hello world\""),
            (
                "plugbay|2|unix|/tmp/x/plugin.sock|grpc",
                Code::FailedPrecondition,
                "chose 2, the host offers 1",
            ),
            ("plugbay|one|unix|/tmp/x/plugin.sock|grpc", Code::FailedPrecondition, "not a number"),
            ("plugbay|1|tcp|127.0.0.1:80|grpc", Code::PermissionDenied, "network \"tcp\""),
            ("plugbay|1|unix|/run/docker.sock|grpc", Code::PermissionDenied, "/run/docker.sock"),
            ("plugbay|1|unix|/tmp/x/plugin.sock|netrpc", Code::FailedPrecondition, "netrpc"),
        ];
        for (line, code, fragment) in cases {
            let error = check(line, socket, &both).unwrap_err();
            assert_eq!(error.code(), code, "{line}: {error}");
            assert!(error.to_string().contains(fragment), "{line}: {error}");
        }
        let long = "x".repeat(5000);
        assert!(check(&long, socket, &both).unwrap_err().to_string().len() < 400, "quotes are bounded");
    }
}

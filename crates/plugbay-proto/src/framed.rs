//! The framed transport's wire format (docs/process-protocol.md, section 10), written once
//! for the host and the SDK: a 17-byte little-endian header (body length u32, kind u8, call
//! id u64, timeout in milliseconds u32), then the body. A request's body is its protobuf
//! message; a reply is [`Kind::ReplyOk`] with the response message, or
//! [`Kind::ReplyError`] with a status code (u32) and a UTF-8 message ([`error_body`]).
//!
//! ```
//! use plugbay_proto::framed::{self, Header, Kind};
//!
//! let frame = framed::encode(Kind::Call, 7, 250, b"body");
//! let header = Header::decode(frame[..framed::HEADER_LEN].try_into().unwrap());
//! assert_eq!(header, Header { length: 4, kind: Kind::Call as u8, id: 7, timeout_ms: 250 });
//! assert_eq!(&frame[framed::HEADER_LEN..], b"body");
//! ```

use std::fmt;
use std::time::Duration;

use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Header size in bytes.
pub const HEADER_LEN: usize = 17;
/// Largest body either side accepts: 64 MiB, the limit of gRPC messages too.
pub const MAX_BODY: usize = crate::MAX_MESSAGE_BYTES;
/// The optional framed feature by which the plugin's host API travels on the connection
/// (`PLUGBAY_FRAMED_FEATURES`).
pub const FEATURE_HOST_CALLS: &str = "host-calls";

/// What a frame is: a request of either side, or a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Host request: `DescribeRequest`.
    Describe = 1,
    /// Host request: `InitRequest`.
    Init = 2,
    /// Host request: `CallRequest`.
    Call = 3,
    /// Host request: `EventRequest`.
    OnEvent = 4,
    /// Host request: `ShutdownRequest`.
    Shutdown = 5,
    /// Host request: `SnapshotRequest`.
    Snapshot = 6,
    /// Host request: `RestoreRequest`.
    Restore = 7,
    /// Plugin request (`host-calls`): `LogRequest`, never answered, id 0.
    Log = 0x10,
    /// Plugin request (`host-calls`): `PublishRequest`.
    Publish = 0x11,
    /// Plugin request (`host-calls`): `InvokeRequest`.
    Invoke = 0x12,
    /// Reply: the response message.
    ReplyOk = 0x80,
    /// Reply: a status code and a message ([`error_body`]).
    ReplyError = 0x81,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 12] = [
        Kind::Describe,
        Kind::Init,
        Kind::Call,
        Kind::OnEvent,
        Kind::Shutdown,
        Kind::Snapshot,
        Kind::Restore,
        Kind::Log,
        Kind::Publish,
        Kind::Invoke,
        Kind::ReplyOk,
        Kind::ReplyError,
    ];

    /// The kind of a header's kind byte; `None` for a byte the protocol does not define.
    pub fn from_byte(byte: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| *kind as u8 == byte)
    }

    /// Whether the frame is a reply ([`Kind::ReplyOk`] or [`Kind::ReplyError`]).
    pub fn is_reply(self) -> bool {
        matches!(self, Kind::ReplyOk | Kind::ReplyError)
    }
}

/// A frame's header, as on the wire. `kind` stays a byte, so a reader decides what to do
/// with a kind it does not know ([`Header::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Body length in bytes.
    pub length: u32,
    /// The kind byte ([`Kind`]).
    pub kind: u8,
    /// The call id: chosen by the requesting side, carried back by the reply.
    pub id: u64,
    /// Request: milliseconds the caller still waits, 0 for none. Reply: 0.
    pub timeout_ms: u32,
}

impl Header {
    /// The header's 17 bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[0..4].copy_from_slice(&self.length.to_le_bytes());
        bytes[4] = self.kind;
        bytes[5..13].copy_from_slice(&self.id.to_le_bytes());
        bytes[13..17].copy_from_slice(&self.timeout_ms.to_le_bytes());
        bytes
    }

    /// Reads a header from its 17 bytes (every byte pattern is a header; [`Header::kind`]
    /// and [`read`] check the kind and the length).
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Header {
        let u32_at = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[5..13]);
        Header { length: u32_at(0), kind: bytes[4], id: u64::from_le_bytes(id), timeout_ms: u32_at(13) }
    }

    /// The frame's kind; `None` for an undefined kind byte.
    pub fn kind(&self) -> Option<Kind> {
        Kind::from_byte(self.kind)
    }
}

/// A timeout as the header's milliseconds: 0 for none, at least 1 for any timeout (so a
/// sub-millisecond timeout does not read as none), at most `u32::MAX`.
pub fn timeout_ms(timeout: Option<Duration>) -> u32 {
    timeout.map_or(0, |t| t.as_millis().clamp(1, u128::from(u32::MAX)) as u32)
}

/// A whole frame: header, then `body`.
///
/// # Panics
/// If `body` is longer than `u32::MAX` bytes (callers keep bodies under [`MAX_BODY`]).
pub fn encode(kind: Kind, id: u64, timeout_ms: u32, body: &[u8]) -> Vec<u8> {
    let length = u32::try_from(body.len()).expect("a frame body fits a u32 length");
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    frame.extend_from_slice(&Header { length, kind: kind as u8, id, timeout_ms }.encode());
    frame.extend_from_slice(body);
    frame
}

/// A whole frame whose body is `message`, encoded in place (no copy of the body).
///
/// # Panics
/// If the message is longer than `u32::MAX` bytes.
pub fn encode_message(kind: Kind, id: u64, timeout_ms: u32, message: &impl Message) -> Vec<u8> {
    let body_length = message.encoded_len();
    let length = u32::try_from(body_length).expect("a frame body fits a u32 length");
    let mut frame = Vec::with_capacity(HEADER_LEN + body_length);
    frame.extend_from_slice(&Header { length, kind: kind as u8, id, timeout_ms }.encode());
    message.encode(&mut frame).expect("a Vec grows to fit the message");
    frame
}

/// An error reply's body: the status code (u32 little-endian), then the UTF-8 message.
pub fn error_body(status: &tonic::Status) -> Vec<u8> {
    let mut body = (status.code() as i32).to_le_bytes().to_vec();
    body.extend_from_slice(status.message().as_bytes());
    body
}

/// The status an error reply's body carries (a message that is not UTF-8 is read lossily).
///
/// # Errors
/// [`FrameError::MalformedErrorReply`] for a body shorter than its 4-byte code.
pub fn decode_error_body(body: &[u8]) -> Result<tonic::Status, FrameError> {
    let Some((code, message)) = body.split_first_chunk::<4>() else {
        return Err(FrameError::MalformedErrorReply { length: body.len() });
    };
    Ok(tonic::Status::new(tonic::Code::from_i32(i32::from_le_bytes(*code)), String::from_utf8_lossy(message)))
}

/// A frame as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its header.
    pub header: Header,
    /// Its body, `header.length` bytes.
    pub body: Vec<u8>,
}

/// Why a frame could not be read; every one ends the connection.
#[derive(Debug)]
pub enum FrameError {
    /// The connection ended (or failed) between frames.
    Closed(std::io::Error),
    /// The connection ended (or failed) inside a frame.
    Truncated(std::io::Error),
    /// The header announces a body longer than the reader accepts.
    Oversized {
        /// The announced length.
        length: usize,
        /// The reader's limit.
        max: usize,
    },
    /// An error reply too short to hold its status code.
    MalformedErrorReply {
        /// The body's length.
        length: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Closed(error) => write!(f, "the connection closed ({error})"),
            FrameError::Truncated(error) => write!(f, "the connection closed mid-frame ({error})"),
            FrameError::Oversized { length, max } => write!(f, "a {length}-byte frame, more than {max}"),
            FrameError::MalformedErrorReply { length } => {
                write!(f, "an error reply of {length} bytes, too short for its 4-byte status code")
            }
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Closed(error) | FrameError::Truncated(error) => Some(error),
            _ => None,
        }
    }
}

/// Reads one frame, refusing a body longer than `max` before reading it.
///
/// # Errors
/// [`FrameError::Closed`] when the stream ends (or fails) before a header,
/// [`FrameError::Truncated`] inside one, [`FrameError::Oversized`] for a length over `max`.
pub async fn read<R: AsyncRead + Unpin>(reader: &mut R, max: usize) -> Result<Frame, FrameError> {
    let mut bytes = [0u8; HEADER_LEN];
    match reader.read_exact(&mut bytes[..1]).await {
        Ok(_) => {}
        Err(error) => return Err(FrameError::Closed(error)),
    }
    reader.read_exact(&mut bytes[1..]).await.map_err(FrameError::Truncated)?;
    let header = Header::decode(&bytes);
    let length = header.length as usize;
    if length > max {
        return Err(FrameError::Oversized { length, max });
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await.map_err(FrameError::Truncated)?;
    Ok(Frame { header, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8], max: usize) -> Result<Frame, FrameError> {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut reader = bytes;
        runtime.block_on(read(&mut reader, max))
    }

    #[test]
    fn the_header_is_seventeen_little_endian_bytes() {
        let frame = encode(Kind::ReplyError, 0x0102_0304_0506_0708, 0x0a0b_0c0d, b"xy");
        assert_eq!(frame, [2, 0, 0, 0, 0x81, 8, 7, 6, 5, 4, 3, 2, 1, 0x0d, 0x0c, 0x0b, 0x0a, b'x', b'y']);
        let frame = read_all(&frame, MAX_BODY).unwrap();
        assert_eq!(frame.header.kind(), Some(Kind::ReplyError));
        assert_eq!((frame.header.id, frame.header.timeout_ms), (0x0102_0304_0506_0708, 0x0a0b_0c0d));
        assert_eq!(frame.body, b"xy");
    }

    #[test]
    fn a_message_frame_equals_the_frame_of_its_encoding() {
        let request = crate::plugin::v1::CallRequest {
            method: "m".into(),
            payload: vec![1, 2, 3],
            content_type: "application/json".into(),
        };
        assert_eq!(
            encode_message(Kind::Call, 9, 5, &request),
            encode(Kind::Call, 9, 5, &request.encode_to_vec())
        );
    }

    #[test]
    fn kinds_round_trip_and_unknown_bytes_are_none() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_byte(kind as u8), Some(kind));
        }
        for byte in [0u8, 8, 0x0f, 0x13, 0x7f, 0x82, 0xff] {
            assert_eq!(Kind::from_byte(byte), None, "{byte:#x}");
        }
    }

    #[test]
    fn timeouts_round_up_to_a_millisecond_and_cap() {
        assert_eq!(timeout_ms(None), 0);
        assert_eq!(timeout_ms(Some(Duration::from_micros(10))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_millis(1500))), 1500);
        assert_eq!(timeout_ms(Some(Duration::from_secs(u64::MAX / 4))), u32::MAX);
    }

    #[test]
    fn an_oversized_frame_is_refused_before_its_body_is_read() {
        let mut frame =
            Header { length: 1025, kind: Kind::Call as u8, id: 1, timeout_ms: 0 }.encode().to_vec();
        frame.extend_from_slice(b"short");
        let error = read_all(&frame, 1024).unwrap_err();
        assert!(matches!(error, FrameError::Oversized { length: 1025, max: 1024 }), "{error}");
        let at_limit = encode(Kind::Call, 1, 0, &[7u8; 1024]);
        assert_eq!(read_all(&at_limit, 1024).unwrap().body.len(), 1024);
    }

    #[test]
    fn a_stream_ending_between_or_inside_frames_says_which() {
        assert!(matches!(read_all(&[], MAX_BODY).unwrap_err(), FrameError::Closed(_)));
        let frame = encode(Kind::Call, 1, 0, b"body");
        for cut in [1, HEADER_LEN - 1, HEADER_LEN, frame.len() - 1] {
            let error = read_all(&frame[..cut], MAX_BODY).unwrap_err();
            assert!(matches!(error, FrameError::Truncated(_)), "cut at {cut}: {error}");
        }
    }

    #[test]
    fn error_replies_carry_the_code_and_message() {
        let status = tonic::Status::not_found("no such method \u{e9}");
        let body = error_body(&status);
        assert_eq!(&body[..4], &5u32.to_le_bytes());
        let back = decode_error_body(&body).unwrap();
        assert_eq!((back.code(), back.message()), (tonic::Code::NotFound, "no such method \u{e9}"));
        let error = decode_error_body(&[5, 0, 0]).unwrap_err();
        assert!(matches!(error, FrameError::MalformedErrorReply { length: 3 }), "{error}");
        let lossy = decode_error_body(&[13, 0, 0, 0, 0xff]).unwrap();
        assert_eq!((lossy.code(), lossy.message()), (tonic::Code::Internal, "\u{fffd}"));
    }
}

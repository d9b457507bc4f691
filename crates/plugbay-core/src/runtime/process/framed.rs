//! The lean framed transport: the PluginService messages as length-prefixed protobuf frames
//! on the plugin's Unix socket, many calls multiplexed by id on one connection, without
//! HTTP/2. Offered in the handshake to plugins that speak it (the Rust SDK); every other
//! plugin keeps gRPC. The wire format is in docs/process-protocol.md, section "Framed".
//!
//! A frame is a 17-byte header, little-endian: body length (u32), kind (u8), call id
//! (u64), timeout in milliseconds (u32, 0 = none); then the body. Requests carry the
//! request message; a reply has kind [`REPLY_OK`] with the response message, or
//! [`REPLY_ERROR`] with a u32 status code and a UTF-8 message.
//!
//! With the `host-calls` feature (offered in `PLUGBAY_FRAMED_FEATURES`) the plugin sends
//! its host API requests on the same connection: [`LOG`] (never answered), [`PUBLISH`]
//! and [`INVOKE`], with ids of its own, answered with the same reply kinds.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use plugbay_proto::plugin::v1 as pb;
use plugbay_proto::plugin::v1::host_service_server::HostService;
use plugbay_proto::prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;

use super::callbacks::Callbacks;

/// Request kinds.
pub(super) const DESCRIBE: u8 = 1;
pub(super) const INIT: u8 = 2;
pub(super) const CALL: u8 = 3;
pub(super) const ON_EVENT: u8 = 4;
pub(super) const SHUTDOWN: u8 = 5;
pub(super) const SNAPSHOT: u8 = 6;
pub(super) const RESTORE: u8 = 7;
/// Plugin-to-host request kinds (feature `host-calls`).
const LOG: u8 = 0x10;
const PUBLISH: u8 = 0x11;
const INVOKE: u8 = 0x12;
/// The optional framed features this host offers (`PLUGBAY_FRAMED_FEATURES`).
pub(super) const FEATURES: &str = "host-calls";
/// Reply kinds.
const REPLY_OK: u8 = 0x80;
const REPLY_ERROR: u8 = 0x81;
/// Header size in bytes.
const HEADER: usize = 17;
/// Largest body accepted.
const MAX_BODY: usize = super::MAX_MESSAGE_BYTES;
/// Metadata key marking statuses that came from the plugin (not from the transport).
pub(super) const FROM_PLUGIN: &str = "plugbay-framed";

type Reply = Result<Vec<u8>, tonic::Status>;

/// The host's side of a framed connection.
#[derive(Clone)]
pub(super) struct FramedClient {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    pending: Mutex<Pending>,
    next_id: AtomicU64,
    /// Set, with the reason, when the connection is gone.
    closed: tokio::sync::watch::Sender<Option<String>>,
}

#[derive(Default)]
struct Pending {
    calls: HashMap<u64, oneshot::Sender<Reply>>,
    /// Why the connection is gone, once it is.
    closed: Option<String>,
}

fn transport_error(why: impl std::fmt::Display) -> tonic::Status {
    tonic::Status::unknown(format!("transport error: {why}"))
}

/// Forgets a call whose caller stopped waiting (deadline passed, future dropped).
struct Forget<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.inner.pending.lock().calls.remove(&self.id);
    }
}

impl FramedClient {
    /// Connects and starts reading replies; the plugin's host API requests on the
    /// connection are served by `host`.
    pub(super) async fn connect(path: &Path, host: Callbacks) -> std::io::Result<FramedClient> {
        let (reader, writer) = tokio::net::UnixStream::connect(path).await?.into_split();
        let inner = Arc::new(Inner {
            writer: Arc::new(tokio::sync::Mutex::new(writer)),
            pending: Mutex::new(Pending::default()),
            next_id: AtomicU64::new(1),
            closed: tokio::sync::watch::channel(None).0,
        });
        tokio::spawn(read_frames(reader, Arc::downgrade(&inner), host));
        Ok(FramedClient { inner })
    }

    /// Sends one request and waits for its reply.
    pub(super) async fn rpc<
        Request: plugbay_proto::prost::Message,
        Response: plugbay_proto::prost::Message + Default,
    >(
        &self,
        kind: u8,
        request: &Request,
        timeout: Option<Duration>,
    ) -> Result<Response, tonic::Status> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, reply) = oneshot::channel();
        {
            let mut pending = self.inner.pending.lock();
            if let Some(why) = &pending.closed {
                return Err(transport_error(why));
            }
            pending.calls.insert(id, sender);
        }
        let _forget = Forget { inner: &self.inner, id };
        let body_length = request.encoded_len();
        let mut frame = Vec::with_capacity(HEADER + body_length);
        frame.extend_from_slice(&(body_length as u32).to_le_bytes());
        frame.push(kind);
        frame.extend_from_slice(&id.to_le_bytes());
        let timeout_ms = timeout.map_or(0, |t| t.as_millis().clamp(1, u128::from(u32::MAX)) as u32);
        frame.extend_from_slice(&timeout_ms.to_le_bytes());
        request.encode(&mut frame).map_err(|error| tonic::Status::internal(error.to_string()))?;
        self.send(frame).await?;
        let body = match timeout {
            Some(timeout) => match tokio::time::timeout(timeout, reply).await {
                Ok(reply) => reply,
                Err(_) => return Err(tonic::Status::cancelled("Timeout expired")),
            },
            None => reply.await,
        };
        let body = body.map_err(|_| transport_error("the connection closed"))??;
        Response::decode(&body[..])
            .map_err(|error| tonic::Status::internal(format!("the plugin sent a malformed reply: {error}")))
    }
}

impl FramedClient {
    /// Writes one frame whole, even if the caller stops waiting midway: a frame cut in half
    /// would desynchronise the connection for every other call. Small frames go out in one
    /// non-blocking write on the caller's task; the rest, if any, is finished by a task of
    /// its own that holds the writer until done.
    async fn send(&self, frame: Vec<u8>) -> Result<(), tonic::Status> {
        let mut writer = self.inner.writer.clone().lock_owned().await;
        let mut written = 0;
        while written < frame.len() {
            match writer.try_write(&frame[written..]) {
                Ok(n) => written += n,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(error) => return Err(transport_error(error)),
            }
        }
        if written == frame.len() {
            return Ok(());
        }
        let finish = tokio::spawn(async move { writer.write_all(&frame[written..]).await });
        match finish.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(transport_error(error)),
            Err(error) => Err(transport_error(error)),
        }
    }

    /// Resolves, with the reason, once the connection is gone (never for a live one).
    pub(super) fn closed(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let mut closed = self.inner.closed.subscribe();
        async move {
            match closed.wait_for(Option::is_some).await {
                Ok(why) => why.clone().unwrap_or_default(),
                Err(_) => "the connection closed".to_owned(),
            }
        }
    }
}

/// An error status as an error reply's body: the code, then the message.
fn error_body(status: &tonic::Status) -> Vec<u8> {
    let mut body = (status.code() as i32).to_le_bytes().to_vec();
    body.extend_from_slice(status.message().as_bytes());
    body
}

/// Serves one host API request the plugin sent on the connection: a log line at once (in
/// order), publish and invoke on a task of their own (an invoke may call back into this
/// very plugin), answered on the connection.
async fn host_call(host: &Callbacks, inner: &Arc<Inner>, kind: u8, id: u64, body: Vec<u8>) {
    fn decode<T: Message + Default>(body: &[u8]) -> Result<tonic::Request<T>, tonic::Status> {
        T::decode(body)
            .map(tonic::Request::new)
            .map_err(|error| tonic::Status::invalid_argument(format!("malformed request: {error}")))
    }
    if kind == LOG {
        if let Ok(request) = decode::<pb::LogRequest>(&body) {
            let _ = host.log(request).await;
        }
        return;
    }
    let (host, client) = (host.clone(), FramedClient { inner: inner.clone() });
    tokio::spawn(async move {
        let reply = match kind {
            PUBLISH => match decode(&body) {
                Ok(request) => host.publish(request).await.map(|r| r.into_inner().encode_to_vec()),
                Err(status) => Err(status),
            },
            _ => match decode(&body) {
                Ok(request) => host.invoke(request).await.map(|r| r.into_inner().encode_to_vec()),
                Err(status) => Err(status),
            },
        };
        let (kind, body) = match reply {
            Ok(body) => (REPLY_OK, body),
            Err(status) => (REPLY_ERROR, error_body(&status)),
        };
        let mut frame = Vec::with_capacity(HEADER + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.push(kind);
        frame.extend_from_slice(&id.to_le_bytes());
        frame.extend_from_slice(&0u32.to_le_bytes());
        frame.extend_from_slice(&body);
        let _ = client.send(frame).await;
    });
}

/// Reads frames until the connection ends: replies to the host's requests, and the
/// plugin's host API requests.
async fn read_frames(mut reader: OwnedReadHalf, inner: std::sync::Weak<Inner>, host: Callbacks) {
    let why = loop {
        let mut header = [0u8; HEADER];
        if let Err(error) = reader.read_exact(&mut header).await {
            break format!("the connection closed ({error})");
        }
        let length = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let kind = header[4];
        let id = u64::from_le_bytes(header[5..13].try_into().expect("8 bytes"));
        if length > MAX_BODY {
            break format!("the plugin sent a {length}-byte frame, more than {MAX_BODY}");
        }
        let mut body = vec![0u8; length];
        if let Err(error) = reader.read_exact(&mut body).await {
            break format!("the connection closed mid-frame ({error})");
        }
        let reply = match kind {
            REPLY_OK => Ok(body),
            REPLY_ERROR if body.len() >= 4 => {
                let code = i32::from_le_bytes(body[0..4].try_into().expect("4 bytes"));
                let mut status =
                    tonic::Status::new(tonic::Code::from_i32(code), String::from_utf8_lossy(&body[4..]));
                status.metadata_mut().insert(FROM_PLUGIN, tonic::metadata::MetadataValue::from_static("1"));
                Err(status)
            }
            LOG | PUBLISH | INVOKE => {
                let Some(inner) = inner.upgrade() else { return };
                host_call(&host, &inner, kind, id, body).await;
                continue;
            }
            other => break format!("the plugin sent a frame of unknown kind {other:#x}"),
        };
        let Some(inner) = inner.upgrade() else { return };
        let waiter = inner.pending.lock().calls.remove(&id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(reply);
        }
    };
    if let Some(inner) = inner.upgrade() {
        {
            let mut pending = inner.pending.lock();
            pending.closed = Some(why.clone());
            for (_, waiter) in pending.calls.drain() {
                let _ = waiter.send(Err(transport_error(&why)));
            }
        }
        inner.closed.send_replace(Some(why));
    }
}

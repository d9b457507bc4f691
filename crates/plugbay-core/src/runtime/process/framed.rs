//! The lean framed transport: the PluginService messages as length-prefixed protobuf frames
//! on the plugin's Unix socket, many calls multiplexed by id on one connection, without
//! HTTP/2. Offered in the handshake to plugins that speak it (the Rust SDK); every other
//! plugin keeps gRPC. The wire format is written once in [`plugbay_proto::framed`] (and in
//! docs/process-protocol.md, section "Framed").
//!
//! With the `host-calls` feature (offered in `PLUGBAY_FRAMED_FEATURES`) the plugin sends
//! its host API requests on the same connection: `Log` (never answered), `Publish` and
//! `Invoke`, with ids of its own, answered with the same reply kinds.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use plugbay_proto::framed::{self as wire, FrameError, Kind};
use plugbay_proto::plugin::v1 as pb;
use plugbay_proto::plugin::v1::host_service_server::HostService;
use plugbay_proto::prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::callbacks::Callbacks;
use super::client::RpcError;

/// The optional framed features this host offers (`PLUGBAY_FRAMED_FEATURES`).
pub(super) const FEATURES: &str = wire::FEATURE_HOST_CALLS;

type Reply = Result<Vec<u8>, RpcError>;

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
    /// Where the connection's tasks run (the host's runtime).
    handle: Handle,
}

#[derive(Default)]
struct Pending {
    calls: HashMap<u64, oneshot::Sender<Reply>>,
    /// Why the connection is gone, once it is.
    closed: Option<String>,
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
    /// Connects and starts reading replies on `handle`; the plugin's host API requests on
    /// the connection are served by `host`.
    pub(super) async fn connect(
        path: &Path,
        host: Callbacks,
        handle: Handle,
    ) -> std::io::Result<FramedClient> {
        let (reader, writer) = tokio::net::UnixStream::connect(path).await?.into_split();
        let inner = Arc::new(Inner {
            writer: Arc::new(tokio::sync::Mutex::new(writer)),
            pending: Mutex::new(Pending::default()),
            next_id: AtomicU64::new(1),
            closed: tokio::sync::watch::channel(None).0,
            handle: handle.clone(),
        });
        handle.spawn(read_frames(reader, Arc::downgrade(&inner), host));
        Ok(FramedClient { inner })
    }

    /// Sends one request and waits for its reply.
    pub(super) async fn rpc<Request: Message, Response: Message + Default>(
        &self,
        kind: Kind,
        request: &Request,
        timeout: Option<Duration>,
    ) -> Result<Response, RpcError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, reply) = oneshot::channel();
        {
            let mut pending = self.inner.pending.lock();
            if let Some(why) = &pending.closed {
                return Err(RpcError::Transport(why.clone()));
            }
            pending.calls.insert(id, sender);
        }
        let _forget = Forget { inner: &self.inner, id };
        self.send(wire::encode_message(kind, id, wire::timeout_ms(timeout), request)).await?;
        let body = match timeout {
            Some(timeout) => match tokio::time::timeout(timeout, reply).await {
                Ok(reply) => reply,
                Err(_) => return Err(RpcError::Timeout(Some(timeout))),
            },
            None => reply.await,
        };
        let body = body.map_err(|_| RpcError::Transport("the connection closed".to_owned()))??;
        Response::decode(&body[..]).map_err(|error| {
            RpcError::Plugin(tonic::Status::internal(format!("the plugin sent a malformed reply: {error}")))
        })
    }

    /// Writes one frame whole, even if the caller stops waiting midway: a frame cut in half
    /// would desynchronise the connection for every other call. Small frames go out in one
    /// non-blocking write on the caller's task; the rest, if any, is finished by a task of
    /// its own that holds the writer until done.
    async fn send(&self, frame: Vec<u8>) -> Result<(), RpcError> {
        let transport = |error: &dyn std::fmt::Display| RpcError::Transport(error.to_string());
        let mut writer = self.inner.writer.clone().lock_owned().await;
        let mut written = 0;
        while written < frame.len() {
            match writer.try_write(&frame[written..]) {
                Ok(n) => written += n,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(error) => return Err(transport(&error)),
            }
        }
        if written == frame.len() {
            return Ok(());
        }
        let finish = self.inner.handle.spawn(async move { writer.write_all(&frame[written..]).await });
        match finish.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(transport(&error)),
            Err(error) => Err(transport(&error)),
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

/// Serves one host API request the plugin sent on the connection: a log line at once (in
/// order), publish and invoke on a task of their own (an invoke may call back into this
/// very plugin), answered on the connection.
async fn host_call(host: &Callbacks, inner: &Arc<Inner>, kind: Kind, id: u64, body: Vec<u8>) {
    fn decode<T: Message + Default>(body: &[u8]) -> Result<tonic::Request<T>, tonic::Status> {
        T::decode(body)
            .map(tonic::Request::new)
            .map_err(|error| tonic::Status::invalid_argument(format!("malformed request: {error}")))
    }
    if kind == Kind::Log {
        if let Ok(request) = decode::<pb::LogRequest>(&body) {
            let _ = host.log(request).await;
        }
        return;
    }
    let (host, client) = (host.clone(), FramedClient { inner: inner.clone() });
    inner.handle.spawn(async move {
        let reply = match kind {
            Kind::Publish => match decode(&body) {
                Ok(request) => host.publish(request).await.map(|r| r.into_inner().encode_to_vec()),
                Err(status) => Err(status),
            },
            _ => match decode(&body) {
                Ok(request) => host.invoke(request).await.map(|r| r.into_inner().encode_to_vec()),
                Err(status) => Err(status),
            },
        };
        let frame = match reply {
            Ok(body) => wire::encode(Kind::ReplyOk, id, 0, &body),
            Err(status) => wire::encode(Kind::ReplyError, id, 0, &wire::error_body(&status)),
        };
        let _ = client.send(frame).await;
    });
}

/// Reads frames until the connection ends: replies to the host's requests, and the
/// plugin's host API requests.
async fn read_frames(mut reader: OwnedReadHalf, inner: std::sync::Weak<Inner>, host: Callbacks) {
    let why = loop {
        let frame = match wire::read(&mut reader, wire::MAX_BODY).await {
            Ok(frame) => frame,
            Err(FrameError::Oversized { length, max }) => {
                break format!("the plugin sent a {length}-byte frame, more than {max}");
            }
            Err(error) => break error.to_string(),
        };
        let (id, body) = (frame.header.id, frame.body);
        let reply = match frame.header.kind() {
            Some(Kind::ReplyOk) => Ok(body),
            Some(Kind::ReplyError) => match wire::decode_error_body(&body) {
                Ok(status) => Err(RpcError::Plugin(status)),
                Err(error) => break format!("the plugin sent {error}"),
            },
            Some(kind @ (Kind::Log | Kind::Publish | Kind::Invoke)) => {
                let Some(inner) = inner.upgrade() else { return };
                host_call(&host, &inner, kind, id, body).await;
                continue;
            }
            _ => break format!("the plugin sent a frame of unknown kind {:#x}", frame.header.kind),
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
                let _ = waiter.send(Err(RpcError::Transport(why.clone())));
            }
        }
        inner.closed.send_replace(Some(why));
    }
}

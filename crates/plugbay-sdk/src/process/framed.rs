//! The plugin's side of the lean framed transport (docs/process-protocol.md, "Framed"):
//! length-prefixed protobuf frames multiplexed by call id on the plugin socket, answered by
//! the same `PluginService` implementation the gRPC server uses. When the host offers
//! `host-calls` (`PLUGBAY_FRAMED_FEATURES`), the plugin's host API (log, publish, invoke)
//! travels on the same connection instead of a gRPC connection to the callback socket.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use futures_util::FutureExt;
use plugbay_proto::framed::{self as wire, Kind};
use plugbay_proto::plugin::v1 as pb;
use plugbay_proto::plugin::v1::plugin_service_server::PluginService;
use plugbay_proto::prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Notify, oneshot, watch};

use super::{MAX_MESSAGE_BYTES, Service};
use crate::Plugin;

/// Log lines queued for the host before new ones are dropped.
const LOG_QUEUE: usize = 1024;
/// How long shutdown waits for the replies of requests still being served.
const REPLY_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Requests being served on every connection, so that shutdown can wait for their replies
/// (Shutdown's own among them) instead of guessing how long they take.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    fn begin(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    fn end(&self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Waits until no request is being served, at most `limit`.
    async fn drained(&self, limit: std::time::Duration) {
        let _ = tokio::time::timeout(limit, async {
            loop {
                let idle = self.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if self.count.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        })
        .await;
    }
}

/// Serves connections until the plugin is asked to shut down. `host_calls`: the host takes
/// host API requests on the connection.
pub(super) async fn serve<P: Plugin>(
    listener: UnixListener,
    service: Arc<Service<P>>,
    host_calls: bool,
    mut stopped: watch::Receiver<bool>,
) {
    let in_flight = Arc::new(InFlight::default());
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    service.handle.spawn(connection(stream, service.clone(), host_calls, in_flight.clone()));
                }
                Err(_) => return,
            },
            _ = stopped.wait_for(|stop| *stop) => {
                // The Shutdown reply (and those of calls still running) must reach the host
                // before the process exits: a reply written to the socket survives the exit.
                in_flight.drained(REPLY_GRACE).await;
                return;
            }
        }
    }
}

type Reply = Result<Vec<u8>, tonic::Status>;

/// One connection to the host, as the plugin's host API sees it: frames are written whole,
/// log lines wait in a queue that goes out ahead of the next frame (so a line logged while
/// serving a request reaches the host before its reply, in the same write), and replies to
/// the plugin's own requests are routed back by id.
pub(crate) struct Link {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    /// Encoded log frames not written yet, oldest first.
    logs: std::sync::Mutex<VecDeque<Vec<u8>>>,
    /// Host requests being served: while one is, its reply carries the queued log lines.
    serving: AtomicUsize,
    /// Wakes the task that writes log lines logged while no request is being served.
    flush: Arc<Notify>,
    /// The plugin's requests waiting for the host's reply; `None` once the connection is gone.
    pending: std::sync::Mutex<Option<HashMap<u64, oneshot::Sender<Reply>>>>,
    next_id: AtomicU64,
}

fn lost() -> tonic::Status {
    tonic::Status::unavailable("the connection to the host closed")
}

impl Link {
    /// Writes `frame` after the queued log lines, in one write.
    async fn write(&self, frame: &[u8]) -> std::io::Result<()> {
        let mut writer = self.writer.lock().await;
        let queued: Vec<Vec<u8>> = self.logs.lock().expect("not poisoned").drain(..).collect();
        if queued.is_empty() {
            return writer.write_all(frame).await;
        }
        let mut all = queued.concat();
        all.extend_from_slice(frame);
        writer.write_all(&all).await
    }

    /// Queues a log line; it never waits for the host (a full queue drops the line).
    pub(crate) fn log(&self, request: &pb::LogRequest) {
        {
            let mut logs = self.logs.lock().expect("not poisoned");
            if logs.len() >= LOG_QUEUE {
                return;
            }
            logs.push_back(wire::encode_message(Kind::Log, 0, 0, request));
        }
        if self.serving.load(Ordering::SeqCst) == 0 {
            self.flush.notify_one();
        }
    }

    /// Sends a request to the host and waits for its reply.
    pub(crate) async fn request<Response: Message + Default>(
        &self,
        kind: Kind,
        request: &impl Message,
    ) -> Result<Response, tonic::Status> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, reply) = oneshot::channel();
        match self.pending.lock().expect("not poisoned").as_mut() {
            Some(pending) => pending.insert(id, sender),
            None => return Err(lost()),
        };
        if self.write(&wire::encode_message(kind, id, 0, request)).await.is_err() {
            if let Some(pending) = self.pending.lock().expect("not poisoned").as_mut() {
                pending.remove(&id);
            }
            return Err(lost());
        }
        let body = reply.await.map_err(|_| lost())??;
        Response::decode(&body[..])
            .map_err(|error| tonic::Status::internal(format!("the host sent a malformed reply: {error}")))
    }

    /// Hands a reply from the host to the request waiting for it.
    fn resolve(&self, kind: Kind, id: u64, body: Vec<u8>) {
        let reply = match kind {
            Kind::ReplyOk => Ok(body),
            _ => Err(wire::decode_error_body(&body)
                .unwrap_or_else(|malformed| tonic::Status::internal(format!("the host sent {malformed}")))),
        };
        let waiter = self.pending.lock().expect("not poisoned").as_mut().and_then(|p| p.remove(&id));
        if let Some(waiter) = waiter {
            let _ = waiter.send(reply);
        }
    }
}

/// Writes the log lines queued while no request was being served, until the link is gone.
async fn flush_logs(link: Weak<Link>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        let Some(link) = link.upgrade() else { return };
        if link.write(&[]).await.is_err() {
            return;
        }
    }
}

async fn connection<P: Plugin>(
    stream: tokio::net::UnixStream,
    service: Arc<Service<P>>,
    host_calls: bool,
    in_flight: Arc<InFlight>,
) {
    let (mut reader, writer) = stream.into_split();
    let flush = Arc::new(Notify::new());
    let link = Arc::new(Link {
        writer: tokio::sync::Mutex::new(writer),
        logs: std::sync::Mutex::new(VecDeque::new()),
        serving: AtomicUsize::new(0),
        flush: flush.clone(),
        pending: std::sync::Mutex::new(Some(HashMap::new())),
        next_id: AtomicU64::new(1),
    });
    let flusher = service.handle.spawn(flush_logs(Arc::downgrade(&link), flush));
    // A frame that cannot be read (the host closed, or one longer than the limit) ends the
    // connection.
    while let Ok(frame) = wire::read(&mut reader, MAX_MESSAGE_BYTES).await {
        let (kind, id, body) = (frame.header.kind, frame.header.id, frame.body);
        if let Some(reply @ (Kind::ReplyOk | Kind::ReplyError)) = Kind::from_byte(kind) {
            link.resolve(reply, id, body);
            continue;
        }
        let (service, link, in_flight) = (service.clone(), link.clone(), in_flight.clone());
        link.serving.fetch_add(1, Ordering::SeqCst);
        in_flight.begin();
        service.handle.clone().spawn(async move {
            // A panic while handling must still answer the host. Plugin code's own panics
            // are caught where it runs (`Service::blocking`); this catches the rest, in
            // place (a task of its own would cost a hand-off per request).
            let host = host_calls.then(|| link.clone());
            let handled = AssertUnwindSafe(dispatch(&*service, host, kind, &body)).catch_unwind().await;
            let handled = handled.unwrap_or_else(|_| {
                Err(tonic::Status::internal("the plugin panicked while serving a request"))
            });
            let reply = match handled {
                Ok(reply) => wire::encode(Kind::ReplyOk, id, 0, &reply),
                Err(status) => wire::encode(Kind::ReplyError, id, 0, &wire::error_body(&status)),
            };
            let _ = link.write(&reply).await;
            link.serving.fetch_sub(1, Ordering::SeqCst);
            in_flight.end();
            // A line logged after the reply's write took the queue waits for the flusher.
            if !link.logs.lock().expect("not poisoned").is_empty() {
                link.flush.notify_one();
            }
        });
    }
    flusher.abort();
    // The plugin's requests still waiting get `unavailable`.
    link.pending.lock().expect("not poisoned").take();
}

/// Decodes a request, runs it through the `PluginService` implementation, encodes the reply.
/// `host`: the link Init hands the plugin as its host API, when the host takes host calls
/// on it.
async fn dispatch<P: Plugin>(
    service: &Service<P>,
    host: Option<Arc<Link>>,
    kind: u8,
    body: &[u8],
) -> Result<Vec<u8>, tonic::Status> {
    fn decode<T: Message + Default>(body: &[u8]) -> Result<tonic::Request<T>, tonic::Status> {
        T::decode(body)
            .map(tonic::Request::new)
            .map_err(|error| tonic::Status::invalid_argument(format!("malformed request: {error}")))
    }
    let reply = match Kind::from_byte(kind) {
        Some(Kind::Describe) => service.describe(decode(body)?).await?.into_inner().encode_to_vec(),
        Some(Kind::Init) => {
            let request: tonic::Request<pb::InitRequest> = decode(body)?;
            service.start(request.into_inner().config, host).await?;
            pb::InitResponse {}.encode_to_vec()
        }
        Some(Kind::Call) => service.call(decode(body)?).await?.into_inner().encode_to_vec(),
        Some(Kind::OnEvent) => service.on_event(decode(body)?).await?.into_inner().encode_to_vec(),
        Some(Kind::Shutdown) => service.shutdown(decode(body)?).await?.into_inner().encode_to_vec(),
        Some(Kind::Snapshot) => service.snapshot(decode(body)?).await?.into_inner().encode_to_vec(),
        Some(Kind::Restore) => service.restore(decode(body)?).await?.into_inner().encode_to_vec(),
        _ => return Err(tonic::Status::unimplemented(format!("unknown request kind {kind}"))),
    };
    Ok(reply)
}

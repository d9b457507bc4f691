//! The gRPC API, `plugbay.host.v1.HostApi` (`proto/plugbay/host/v1/host.proto`): each RPC a
//! thin call into [`Host`]; errors keep their code's number as the gRPC status.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use plugbay_core::{Call, ContentType, Error, Event, Host, Payload, PluginInfo, events};
use plugbay_proto::host::v1 as pb;
use plugbay_proto::host::v1::host_api_server::HostApi;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::{BroadcastStream, ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use crate::daemon::access::{Access, Need, Refusal};
use crate::daemon::ops::Operation;
use crate::daemon::shutdown::Shutdown;

/// A boxed response stream.
type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// How many results of one `InvokeStream` may wait for the client before calls pause.
const STREAM_BUFFER: usize = 64;

/// How many calls of one `InvokeStream` run at once. The next message is read from the
/// stream only when one of them has ended and its result was queued for the client, so a
/// client sending faster than its calls end is slowed by HTTP/2 flow control rather than
/// buffered in the daemon (documented in `proto/plugbay/host/v1/host.proto`).
const STREAM_CONCURRENCY: usize = 32;

/// The service: the host, and the shutdown flag that ends streams.
pub struct HostApiService {
    host: Host,
    shutdown: Shutdown,
    access: Arc<Access>,
}

impl HostApiService {
    /// A service over `host`; with tokens in `access`, every RPC needs one in its
    /// `authorization: Bearer <token>` metadata, with the scope the RPC needs.
    pub fn new(host: Host, shutdown: Shutdown, access: Arc<Access>) -> HostApiService {
        HostApiService { host, shutdown, access }
    }

    /// Refuses an RPC once shutting down, or when its token does not grant `need`.
    fn admit<T>(&self, request: &Request<T>, need: Need<'_>) -> Result<(), Status> {
        self.refuse_if_draining()?;
        self.access.check(authorization(request), need).map(drop).map_err(refused)
    }

    fn refuse_if_draining(&self) -> Result<(), Status> {
        if self.shutdown.is_draining() {
            return Err(Status::unavailable("the daemon is shutting down"));
        }
        Ok(())
    }

    /// Runs a plugin operation (token and shutdown checked first); answers the plugin after.
    async fn manage(
        &self,
        request: Request<pb::PluginRequest>,
        operation: Operation,
    ) -> Result<Response<pb::Plugin>, Status> {
        self.admit(&request, Need::Manage)?;
        let id = operation.run(&self.host, &request.into_inner().id).await.map_err(Status::from)?;
        self.plugin(&id)
    }

    fn plugin(&self, id: &str) -> Result<Response<pb::Plugin>, Status> {
        let info = self.host.plugin(id).map_err(Status::from)?;
        Ok(Response::new(plugin_message(info)))
    }
}

/// The `authorization` metadata, if it is text.
fn authorization<T>(request: &Request<T>) -> Option<&str> {
    request.metadata().get("authorization").and_then(|value| value.to_str().ok())
}

/// A refusal as a status: unauthenticated, or permission denied naming the scope.
fn refused(refusal: Refusal) -> Status {
    match refusal {
        Refusal::Unauthenticated => Status::unauthenticated(refusal.to_string()),
        Refusal::OutOfScope { .. } => Status::permission_denied(refusal.to_string()),
    }
}

/// A call from a request; `timeout` from the gRPC deadline or the request's `timeout_ms`.
fn call_of(request: pb::InvokeRequest, timeout: Option<Duration>) -> Call {
    let payload = Payload::with_type(request.payload, content_type_of(request.content_type));
    let mut call = Call::new(&request.target, request.method, payload);
    if let Some(timeout) = timeout {
        call = call.with_timeout(timeout);
    }
    call
}

/// A message's content type; empty means `application/octet-stream`.
fn content_type_of(content_type: String) -> ContentType {
    if content_type.is_empty() { ContentType::OCTET_STREAM } else { ContentType::new(content_type) }
}

/// One `InvokeStream` result: the response, or the error with its code's number.
fn result_of(id: u64, result: plugbay_core::Result<Payload>) -> pb::InvokeResult {
    let outcome = match result {
        Ok(reply) => pb::invoke_result::Outcome::Response(response_of(reply)),
        Err(error) => pb::invoke_result::Outcome::Error(pb::Error {
            code: error.code().grpc(),
            message: error.to_string(),
            plugin: error.plugin().unwrap_or_default().to_owned(),
        }),
    };
    pb::InvokeResult { id, outcome: Some(outcome) }
}

fn response_of(payload: Payload) -> pb::InvokeResponse {
    pb::InvokeResponse { payload: payload.bytes.to_vec(), content_type: payload.content_type.to_string() }
}

fn plugin_message(info: PluginInfo) -> pb::Plugin {
    pb::Plugin {
        id: info.id.clone(),
        version: info.version.unwrap_or_default(),
        runtime: info.runtime.map(|runtime| runtime.as_str().to_owned()).unwrap_or_default(),
        state: info.state.to_string(),
        capabilities: info.capabilities,
        error: info.error.map(|error| pb::Error {
            code: error.code.grpc(),
            message: error.message,
            plugin: info.id,
        }),
        signature: info.signature.map(|signature| pb::Signature {
            state: signature.state.as_str().to_owned(),
            signer: signature.signer.unwrap_or_default(),
            key_id: signature.key_id.map(|id| id.0).unwrap_or_default(),
            reason: signature.reason.unwrap_or_default(),
            file: signature.file.unwrap_or_default(),
        }),
    }
}

fn event_message(event: Event) -> pb::Event {
    pb::Event {
        topic: event.topic,
        action: event.action,
        payload: event.payload.bytes.to_vec(),
        content_type: event.payload.content_type.to_string(),
        timestamp_ms: event.timestamp_ms,
        source: event.source,
    }
}

/// The gRPC deadline of a request (`grpc-timeout`), if the client set one.
fn grpc_deadline<T>(request: &Request<T>) -> Result<Option<Duration>, Status> {
    let Some(value) = request.metadata().get("grpc-timeout") else { return Ok(None) };
    let text = value.to_str().map_err(|_| Status::invalid_argument("grpc-timeout is not ASCII"))?;
    let (digits, unit) = text.split_at(text.len().saturating_sub(1));
    let amount: u64 = digits.parse().map_err(|_| Status::invalid_argument("grpc-timeout is malformed"))?;
    let timeout = match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return Err(Status::invalid_argument("grpc-timeout has an unknown unit")),
    };
    Ok(Some(timeout))
}

#[tonic::async_trait]
impl HostApi for HostApiService {
    async fn invoke(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::InvokeResponse>, Status> {
        let message = request.get_ref();
        self.admit(&request, Need::Call { target: &message.target, method: &message.method })?;
        let timeout = grpc_deadline(&request)?;
        let call = call_of(request.into_inner(), timeout);
        let reply = self.host.invoke(call).await.map_err(Status::from)?;
        Ok(Response::new(response_of(reply)))
    }

    type InvokeStreamStream = Boxed<pb::InvokeResult>;

    async fn invoke_stream(
        &self,
        request: Request<Streaming<pb::InvokeRequest>>,
    ) -> Result<Response<Self::InvokeStreamStream>, Status> {
        self.refuse_if_draining()?;
        // The token is known now; each message's target and method are checked against
        // its scopes as they arrive.
        let token = self.access.identify(authorization(&request)).map_err(refused)?.cloned();
        let mut requests = request.into_inner();
        let (results, receiver) = mpsc::channel(STREAM_BUFFER);
        let (host, shutdown) = (self.host.clone(), self.shutdown.clone());
        let slots = Arc::new(Semaphore::new(STREAM_CONCURRENCY));
        tokio::spawn(async move {
            // Each call runs on its own task, so a slow call does not hold up the others, and
            // holds one of the stream's slots until its result is queued: with every slot
            // taken, no further message is read.
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else { break };
                let Some(request) = requests.next().await else { break };
                let request = match request {
                    Ok(request) => request,
                    Err(status) => {
                        let _ = results.send(Err(status)).await;
                        break;
                    }
                };
                let id = request.id;
                if shutdown.is_draining() {
                    // Calls already running on this stream finish; later ones are refused.
                    let refused = result_of(id, Err(Error::unavailable("the daemon is shutting down")));
                    let _ = results.send(Ok(refused)).await;
                    continue;
                }
                let need = Need::Call { target: &request.target, method: &request.method };
                if let Some(Err(refusal)) = token.as_ref().map(|token| token.allows(&need)) {
                    let _ = results.send(Ok(result_of(id, Err(Error::denied(refusal.to_string()))))).await;
                    continue;
                }
                let (host, results) = (host.clone(), results.clone());
                tokio::spawn(async move {
                    let timeout = (request.timeout_ms > 0).then(|| Duration::from_millis(request.timeout_ms));
                    let result = result_of(id, host.invoke(call_of(request, timeout)).await);
                    let _ = results.send(Ok(result)).await;
                    drop(slot);
                });
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn list_plugins(
        &self,
        request: Request<pb::ListPluginsRequest>,
    ) -> Result<Response<pb::ListPluginsResponse>, Status> {
        self.admit(&request, Need::Read)?;
        let plugins = self.host.plugins().into_iter().map(plugin_message).collect();
        Ok(Response::new(pb::ListPluginsResponse { plugins }))
    }

    async fn get_plugin(&self, request: Request<pb::PluginRequest>) -> Result<Response<pb::Plugin>, Status> {
        self.admit(&request, Need::Read)?;
        self.plugin(&request.into_inner().id)
    }

    async fn load_plugin(&self, request: Request<pb::PluginRequest>) -> Result<Response<pb::Plugin>, Status> {
        self.manage(request, Operation::Load).await
    }

    async fn unload_plugin(
        &self,
        request: Request<pb::PluginRequest>,
    ) -> Result<Response<pb::Plugin>, Status> {
        self.manage(request, Operation::Unload).await
    }

    async fn reload_plugin(
        &self,
        request: Request<pb::PluginRequest>,
    ) -> Result<Response<pb::Plugin>, Status> {
        self.manage(request, Operation::Reload).await
    }

    async fn stop_plugin(&self, request: Request<pb::PluginRequest>) -> Result<Response<pb::Plugin>, Status> {
        self.manage(request, Operation::Stop).await
    }

    async fn start_plugin(
        &self,
        request: Request<pb::PluginRequest>,
    ) -> Result<Response<pb::Plugin>, Status> {
        self.manage(request, Operation::Start).await
    }

    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        self.admit(&request, Need::Manage)?;
        let request = request.into_inner();
        let payload = Payload::with_type(request.payload, content_type_of(request.content_type));
        let event = Event::new(request.topic, request.action, payload, "api");
        self.host.publish(event).map_err(Status::from)?;
        Ok(Response::new(pb::PublishResponse {}))
    }

    type SubscribeStream = Boxed<pb::Event>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.admit(&request, Need::Read)?;
        let topics = request.into_inner().topics;
        let events = BroadcastStream::new(self.host.subscribe())
            .filter_map(move |event| {
                let event = event.ok().filter(|event| {
                    topics.is_empty()
                        || topics.iter().any(|pattern| events::topic_matches(pattern, &event.topic))
                });
                std::future::ready(event.map(|event| Ok(event_message(event))))
            })
            .take_until(self.shutdown.wait());
        Ok(Response::new(Box::pin(events)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        let with = |value: &str| {
            let mut request = Request::new(());
            request.metadata_mut().insert("grpc-timeout", value.parse().unwrap());
            grpc_deadline(&request)
        };
        assert_eq!(with("250m").unwrap(), Some(Duration::from_millis(250)));
        assert_eq!(with("2S").unwrap(), Some(Duration::from_secs(2)));
        assert_eq!(with("x").unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}

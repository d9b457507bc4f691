//! The listeners: accept loops with header read timeouts and message limits, which stop
//! accepting on shutdown and give connections in flight until the drain deadline.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use plugbay_proto::host::v1::host_api_server::HostApiServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::daemon::config::DaemonConfig;
use crate::daemon::connections::Connections;
use crate::daemon::grpc::HostApiService;
use crate::daemon::hosts::HostCheckLayer;
use crate::daemon::http::Api;
use crate::daemon::shutdown::Shutdown;

/// Serves the HTTP API on `listener` until shutdown, then waits for requests in flight up
/// to the drain deadline; returns whether they all finished.
pub async fn http(
    listener: TcpListener,
    service: Api,
    config: Arc<DaemonConfig>,
    shutdown: Shutdown,
) -> bool {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().header_read_timeout(config.header_read_timeout).max_buf_size(64 * 1024);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(256).max_header_list_size(64 * 1024);
    // The HTTP/1 header read timeout runs on the connections' coarse clock, and shutdown
    // reaches them through it ([`Connections`]): no lock or timer wheel per request.
    let connections = Connections::new(config.header_read_timeout);
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(error) => {
                        // Out of descriptors, or a connection reset before accept: keep serving.
                        tracing::warn!("HTTP accept failed: {error}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let service = TowerToHyperService::new(service.clone());
                let watched = connections.open();
                // The connection keeps its own copy of the builder anyway (`into_owned`).
                let mut builder = builder.clone();
                builder.http1().timer(watched.timer());
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                tokio::spawn(async move {
                    if let Err(error) = watched.serve(connection).await {
                        tracing::debug!("HTTP connection ended: {error}");
                    }
                });
            }
            () = &mut stop => break,
        }
    }
    drop(listener);
    drained("HTTP", connections.shut_down(), config.drain_timeout).await
}

/// Serves the gRPC API (and `grpc.health.v1`) on `listener` until shutdown, then lets
/// calls in flight finish up to the drain deadline; returns whether they all finished.
/// Every call's `:authority` is checked against `api.allowed_hosts` first, as the HTTP
/// API checks `Host`.
pub async fn grpc(
    listener: TcpListener,
    service: HostApiService,
    config: Arc<DaemonConfig>,
    shutdown: Shutdown,
) -> bool {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<HostApiServer<HostApiService>>().await;
    let api = HostApiServer::new(service)
        .max_decoding_message_size(config.max_body_bytes)
        .max_encoding_message_size(config.max_body_bytes);
    let stop = shutdown.wait();
    let serving = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .layer(HostCheckLayer::new(&config.allowed_hosts))
        .layer(tower::util::MapResponseLayer::new(too_large_is_resource_exhausted::<tonic::body::Body>))
        .add_service(health)
        .add_service(api)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop);
    let (finished_tx, finished_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if let Err(error) = serving.await {
            tracing::error!("the gRPC server failed: {error}");
        }
        let _ = finished_tx.send(());
    });
    shutdown.wait().await;
    reporter.set_not_serving::<HostApiServer<HostApiService>>().await;
    drained("gRPC", async move { drop(finished_rx.await) }, config.drain_timeout).await
}

/// tonic refuses a message over the size limit (from its length prefix, before reading it)
/// with `out_of_range`; plugbay's code for a limit is `resource_exhausted`. plugbay itself
/// never answers `out_of_range`, so every such status is the size check's.
fn too_large_is_resource_exhausted<B>(mut response: axum::http::Response<B>) -> axum::http::Response<B> {
    let out_of_range = (tonic::Code::OutOfRange as i32).to_string();
    if response
        .headers()
        .get("grpc-status")
        .is_some_and(|status| status.as_bytes() == out_of_range.as_bytes())
    {
        let exhausted = (tonic::Code::ResourceExhausted as i32).to_string();
        if let Ok(value) = axum::http::HeaderValue::from_str(&exhausted) {
            response.headers_mut().insert("grpc-status", value);
        }
    }
    response
}

/// Waits for `finished` up to `deadline`; says so in the log when it does not finish.
async fn drained(api: &str, finished: impl Future<Output = ()>, deadline: Duration) -> bool {
    match tokio::time::timeout(deadline, finished).await {
        Ok(()) => true,
        Err(_) => {
            tracing::warn!(
                "{api}: requests still in flight after the drain deadline of {} ms",
                deadline.as_millis()
            );
            false
        }
    }
}

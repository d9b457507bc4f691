//! `plugbay run`: the daemon. A [`Host`] on a plugins folder behind the HTTP/JSON API
//! ([`http`]) and the gRPC API ([`grpc`]), with `/metrics` ([`metrics`]) and a graceful
//! shutdown on SIGTERM/SIGINT ([`shutdown`]). The APIs only translate: what they do is the
//! library's.

pub mod access;
pub mod config;
mod connections;
mod errors;
mod grpc;
mod hosts;
pub mod http;
mod metrics;
mod openapi;
mod ops;
mod serve;
mod shutdown;
mod trust_section;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use plugbay_core::Host;
use tokio::net::TcpListener;

use crate::commands::Outcome;
use crate::daemon::config::DaemonConfig;
use crate::daemon::shutdown::Shutdown;

/// Runs the daemon until SIGTERM or SIGINT, then drains and stops the plugins.
///
/// Prints one line to stdout once both listeners are bound:
/// `plugbay listening http=ADDR grpc=ADDR` (the real ports, also for port 0).
///
/// # Errors
/// When an address cannot be bound, the host cannot be built, or signals cannot be caught.
pub async fn run(config: DaemonConfig) -> anyhow::Result<Outcome> {
    let config = Arc::new(config);
    let shutdown = Shutdown::new();
    // Installed first, so a signal during loading is a graceful shutdown too.
    let on_signal = {
        let shutdown = shutdown.clone();
        let signal = shutdown::signal();
        async move {
            match signal.await {
                Ok(name) => tracing::info!("{name}: shutting down"),
                Err(error) => tracing::error!("cannot wait for signals: {error}"),
            }
            shutdown.trigger();
        }
    };
    tokio::spawn(on_signal);

    let bind = |addr, api: &'static str| async move {
        TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} for the {api} API"))
    };
    let http_listener = bind(config.http_addr, "HTTP").await?;
    let grpc_listener = bind(config.grpc_addr, "gRPC").await?;
    let (http_addr, grpc_addr) = (http_listener.local_addr()?, grpc_listener.local_addr()?);
    println!("plugbay listening http={http_addr} grpc={grpc_addr}");
    tracing::info!(%http_addr, %grpc_addr, plugins = %config.plugins.display(), "listening");

    let host = Host::build(config.host.clone())?;
    let ready = Arc::new(AtomicBool::new(false));
    let state = http::ApiState {
        host: host.clone(),
        config: config.clone(),
        shutdown: shutdown.clone(),
        ready: ready.clone(),
    };
    let http = tokio::spawn(serve::http(http_listener, http::api(state), config.clone(), shutdown.clone()));
    let service = grpc::HostApiService::new(host.clone(), shutdown.clone(), config.access.clone());
    let grpc = tokio::spawn(serve::grpc(grpc_listener, service, config.clone(), shutdown.clone()));

    let report = host.load_all().await;
    for failure in &report.failed {
        tracing::warn!("not loaded: {failure}");
    }
    tracing::info!(loaded = report.loaded.len(), failed = report.failed.len(), "plugins folder loaded");
    ready.store(true, Ordering::Release);

    shutdown.wait().await;
    let (http, grpc) = (http.await.unwrap_or(false), grpc.await.unwrap_or(false));
    tracing::info!(http_drained = http, grpc_drained = grpc, "APIs closed; stopping the plugins");
    host.stop_all().await;
    tracing::info!("stopped");
    Ok(Outcome::Done)
}

//! The HTTP/JSON API (axum): one handler per route, each a thin call into [`Host`], and the
//! guard every request passes first (`Host` header, shutdown, API token and its scopes).

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::BoxError;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::future::{BoxFuture, Either};
use futures_util::{Stream, StreamExt as _};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use plugbay_core::{Call, Code, ContentType, Event, Host, Payload, PluginInfo, events};
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::BroadcastStream;
use tower::Service;
use utoipa::{OpenApi as _, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::daemon::access::{Need, Refusal};
use crate::daemon::config::DaemonConfig;
use crate::daemon::errors::ApiError;
use crate::daemon::hosts;
use crate::daemon::metrics;
use crate::daemon::openapi::{ApiDoc, PluginErrors};
use crate::daemon::ops::Operation;
use crate::daemon::shutdown::Shutdown;

/// The header that carries a call's deadline in milliseconds.
pub const TIMEOUT_HEADER: &str = "x-plugbay-timeout-ms";
/// The largest deadline a caller may ask for (1 day), in milliseconds.
const MAX_TIMEOUT_MS: u64 = 86_400_000;
/// Where the call route's parameters start.
const CALL_PREFIX: &str = "/v1/call/";

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    /// The host the API serves.
    pub host: Host,
    /// The daemon's settings.
    pub config: Arc<DaemonConfig>,
    /// Set on SIGTERM/SIGINT.
    pub shutdown: Shutdown,
    /// Set once the plugins folder was loaded.
    pub ready: Arc<AtomicBool>,
}

/// The HTTP API: the guard (`admit`), then every route and `/openapi.json` describing
/// them.
pub fn api(state: ApiState) -> Api {
    let (router, document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(call))
        .routes(routes!(list, load))
        .routes(routes!(plugin, unload))
        .routes(routes!(action))
        .routes(routes!(events))
        .routes(routes!(crashes))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(prometheus))
        .split_for_parts();
    let document = Bytes::from(document.to_json().unwrap_or_default());
    let openapi = move || {
        let document = document.clone();
        async move { ([(header::CONTENT_TYPE, "application/json")], document) }
    };
    // One reference count per request instead of one per field.
    let state = Arc::new(state);
    let router = router
        .route("/openapi.json", get(openapi))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(state.clone());
    Api { state, router }
}

/// The HTTP API as one service (see [`api`]). The guard runs before the router rather
/// than as a layer on each route, which would add a boxed middleware, a boxed future and a
/// clone of the route to every request; and plain calls, the requests the daemon is for,
/// go straight to `invoke` (what the router would do for them, without its matching,
/// parameter maps and boxed services).
#[derive(Clone)]
pub struct Api {
    state: Arc<ApiState>,
    router: Router,
}

/// The future of one request to [`Api`]: refused by the guard, a plain call, or routed.
type ApiFuture = Either<
    Ready<Result<Response, Infallible>>,
    Either<BoxFuture<'static, Result<Response, Infallible>>, <Router as Service<Request>>::Future>,
>;

impl<B> Service<axum::http::Request<B>> for Api
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ApiFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> ApiFuture {
        let request = request.map(Body::new);
        if let Err(error) = admit(&self.state, &request) {
            return Either::Left(ready(Ok(error.into_response())));
        }
        let Some((capability, method)) = plain_call(&request) else {
            return Either::Right(Either::Right(self.router.call(request)));
        };
        let (capability, method) = (capability.to_owned(), method.to_owned());
        let state = self.state.clone();
        Either::Right(Either::Left(Box::pin(async move {
            Ok(invoke(&state, &capability, method, request).await.into_response())
        })))
    }
}

/// The guard's checks, in order; the first refusal is the answer.
fn admit(state: &ApiState, request: &Request) -> Result<(), ApiError> {
    hosts::check(&state.config.allowed_hosts, request)
        .map_err(|refusal| ApiError::new(refusal.code, refusal.message))?;
    if state.shutdown.is_draining() && request.uri().path() != "/healthz" {
        return Err(ApiError::new(Code::Unavailable, "the daemon is shutting down"));
    }
    let given = request.headers().get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    match state.config.access.check(given, need_of(request)) {
        Ok(_) => Ok(()),
        Err(refusal @ Refusal::Unauthenticated) => {
            Err(ApiError::new(Code::PermissionDenied, refusal.to_string())
                .with_status(StatusCode::UNAUTHORIZED))
        }
        Err(refusal) => Err(ApiError::new(Code::PermissionDenied, refusal.to_string())),
    }
}

/// What `request` needs of its token: nothing for the health checks, the call's target and
/// method for a call, `read` for the other `GET`s, `manage` for the rest. A call path the
/// router would decode (percent-encoded segments) is judged on its raw segments, which a
/// scope naming a target or method does not match: it fails closed.
fn need_of(request: &Request) -> Need<'_> {
    let path = request.uri().path();
    if path == "/healthz" || path == "/readyz" {
        return Need::Open;
    }
    if request.method() == Method::POST
        && let Some((target, method)) = path.strip_prefix(CALL_PREFIX).and_then(|rest| rest.split_once('/'))
    {
        return Need::Call { target, method };
    }
    if request.method() == Method::GET || request.method() == Method::HEAD {
        Need::Read
    } else {
        Need::Manage
    }
}

/// `POST /v1/call/{capability}/{method}`: the body and its content type go to the plugin
/// as they are; the response comes back the same way.
#[utoipa::path(
    post,
    path = "/v1/call/{capability}/{method}",
    tag = "calls",
    params(
        ("capability" = String, Path, description = "A capability (`text.transform@1`) or `plugin:<id>`"),
        ("method" = String, Path, description = "A method the plugin's manifest lists for it"),
        ("x-plugbay-timeout-ms" = Option<u64>, Header, description = "Deadline in ms, capped by the plugin's timeout", nullable = false, minimum = 1, maximum = 86400000),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "Passed to the plugin with its Content-Type"),
    responses(
        (status = 200, description = "The plugin's response, with its content type", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 400, description = "malformed request or deadline", body = ApiError),
        (status = 403, description = "method not whitelisted, or Host header not allowed", body = ApiError),
        (status = 404, description = "no such capability or plugin", body = ApiError),
        (status = 413, description = "body over api.max_body_bytes", body = ApiError),
        (status = 500, description = "the plugin failed", body = ApiError),
        (status = 503, description = "plugin stopped, or daemon shutting down", body = ApiError),
        (status = 504, description = "deadline exceeded", body = ApiError),
    )
)]
async fn call(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let Path((capability, method)) = path.map_err(bad_path)?;
    invoke(&state, &capability, method, request).await
}

/// The call route's work, for the [`call`] handler and the fast path in [`Api`].
async fn invoke(
    state: &ApiState,
    capability: &str,
    method: String,
    request: Request,
) -> Result<Response, ApiError> {
    // The request taken apart, not its headers copied (as the `HeaderMap` extractor does).
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let timeout = deadline(headers)?;
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => ContentType::OCTET_STREAM,
        Some(value) => ContentType::new(
            value
                .to_str()
                .map_err(|_| ApiError::new(Code::InvalidArgument, "the Content-Type header is not ASCII"))?,
        ),
    };
    let bytes = read_body(body, headers, state.config.max_body_bytes).await?;
    let mut call = Call::new(capability, method, Payload::with_type(bytes, content_type));
    if let Some(timeout) = timeout {
        call = call.with_timeout(timeout);
    }
    let reply = state.host.invoke(call).await?;
    // The request's own header when the reply has its type, as most do: no copy.
    let content_type = match headers.get(header::CONTENT_TYPE) {
        Some(value) if value.as_bytes() == reply.content_type.as_str().as_bytes() => value.clone(),
        _ => HeaderValue::from_str(reply.content_type.as_str())
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    };
    Ok(([(header::CONTENT_TYPE, content_type)], reply.bytes).into_response())
}

/// The capability and method of `POST /v1/call/{capability}/{method}` when both are plain
/// (no percent escapes, which the router decodes): the requests [`Api`] answers without
/// the router. Anything else, malformed calls included, goes through the router.
fn plain_call(request: &Request) -> Option<(&str, &str)> {
    if request.method() != Method::POST {
        return None;
    }
    let (capability, method) = request.uri().path().strip_prefix(CALL_PREFIX)?.split_once('/')?;
    let plain = |segment: &str| !segment.is_empty() && !segment.contains(['/', '%']);
    (plain(capability) && plain(method)).then_some((capability, method))
}

/// The deadline from [`TIMEOUT_HEADER`]: 1 ms to 1 day.
fn deadline(headers: &HeaderMap) -> Result<Option<Duration>, ApiError> {
    let Some(value) = headers.get(TIMEOUT_HEADER) else { return Ok(None) };
    let ms = value.to_str().ok().and_then(|text| text.trim().parse::<u64>().ok());
    match ms {
        Some(ms) if (1..=MAX_TIMEOUT_MS).contains(&ms) => Ok(Some(Duration::from_millis(ms))),
        _ => Err(ApiError::new(
            Code::InvalidArgument,
            format!("{TIMEOUT_HEADER} must be a whole number of milliseconds from 1 to {MAX_TIMEOUT_MS}"),
        )),
    }
}

/// Reads the body, refusing one over `limit` from its `Content-Length` before reading it, or
/// as soon as a streamed body passes the limit.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            Code::ResourceExhausted,
            format!("the request body is larger than {limit} bytes (api.max_body_bytes)"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(error) => {
            Err(ApiError::new(Code::InvalidArgument, format!("cannot read the request body: {error}")))
        }
    }
}

/// `GET /v1/plugins`.
#[utoipa::path(get, path = "/v1/plugins", tag = "plugins", responses(
    (status = 200, description = "Every plugin, sorted by id", body = Vec<crate::daemon::openapi::PluginSchema>),
    (status = 403, description = "Host header not allowed", body = ApiError),
))]
async fn list(State(state): State<Arc<ApiState>>) -> Json<Vec<PluginInfo>> {
    Json(state.host.plugins())
}

/// `GET /v1/plugins/{id}`.
#[utoipa::path(get, path = "/v1/plugins/{id}", tag = "plugins",
    params(("id" = String, Path, description = "The plugin id", pattern = r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$")),
    responses(
        (status = 200, description = "The plugin", body = crate::daemon::openapi::PluginSchema),
        PluginErrors,
    )
)]
async fn plugin(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<PluginInfo>, ApiError> {
    let id = plugin_id(path)?;
    Ok(Json(state.host.plugin(&id)?))
}

/// The body of `POST /v1/plugins`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoadRequest {
    /// The name of the folder in the plugins folder (= the plugin id).
    #[schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$")]
    id: String,
}

/// `POST /v1/plugins` with `{"id": "..."}`: loads that folder of the plugins folder.
#[utoipa::path(post, path = "/v1/plugins", tag = "plugins", request_body = LoadRequest,
    responses(
        (status = 201, description = "Loaded", body = crate::daemon::openapi::PluginSchema),
        (status = 415, description = "not application/json", body = ApiError),
        PluginErrors,
    )
)]
async fn load(
    State(state): State<Arc<ApiState>>,
    body: Result<Json<LoadRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<PluginInfo>), ApiError> {
    let Json(request) = body.map_err(|rejection| {
        let status = match rejection {
            JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(Code::InvalidArgument, rejection.body_text()).with_status(status)
    })?;
    let id = Operation::Load.run(&state.host, &request.id).await?;
    Ok((StatusCode::CREATED, Json(state.host.plugin(&id)?)))
}

/// `DELETE /v1/plugins/{id}`.
#[utoipa::path(delete, path = "/v1/plugins/{id}", tag = "plugins",
    params(("id" = String, Path, description = "The plugin id", pattern = r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$")),
    responses(
        (status = 200, description = "Unloaded", body = crate::daemon::openapi::PluginSchema),
        PluginErrors,
    )
)]
async fn unload(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<PluginInfo>, ApiError> {
    let Path(id) = path.map_err(bad_path)?;
    let id = Operation::Unload.run(&state.host, &id).await?;
    Ok(Json(state.host.plugin(&id)?))
}

/// `POST /v1/plugins/{id}/{reload|stop|start}`.
#[utoipa::path(post, path = "/v1/plugins/{id}/{action}", tag = "plugins",
    params(
        ("id" = String, Path, description = "The plugin id", pattern = r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$"),
        ("action" = String, Path, description = "`reload`, `stop` or `start`", pattern = "^(reload|stop|start)$"),
    ),
    responses(
        (status = 200, description = "Done; the plugin now", body = crate::daemon::openapi::PluginSchema),
        PluginErrors,
    )
)]
async fn action(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<PluginInfo>, ApiError> {
    let Path((id, action)) = path.map_err(bad_path)?;
    plugbay_core::manifest::validate_id(&id)?;
    let Some((_, operation)) = Operation::ACTIONS.into_iter().find(|(name, _)| *name == action) else {
        return Err(ApiError::new(
            Code::NotFound,
            format!("no action {action:?} on a plugin; allowed: reload, stop, start"),
        ));
    };
    let id = operation.run(&state.host, &id).await?;
    Ok(Json(state.host.plugin(&id)?))
}

/// The query of `GET /v1/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// A topic pattern (`kv.changed`, `kv.*`, `*`). Default: every topic.
    topic: Option<String>,
}

/// One event as the SSE `data:` line carries it.
#[derive(Debug, Serialize, ToSchema)]
struct EventJson {
    topic: String,
    action: String,
    source: String,
    timestamp_ms: i64,
    content_type: String,
    /// The payload: JSON as it is, other bytes as (lossy) UTF-8 text.
    #[schema(value_type = Object)]
    payload: serde_json::Value,
}

impl From<Event> for EventJson {
    fn from(event: Event) -> EventJson {
        let payload = serde_json::from_slice(&event.payload.bytes)
            .unwrap_or_else(|_| serde_json::Value::from(String::from_utf8_lossy(&event.payload.bytes)));
        EventJson {
            topic: event.topic,
            action: event.action,
            source: event.source,
            timestamp_ms: event.timestamp_ms,
            content_type: event.payload.content_type.to_string(),
            payload,
        }
    }
}

/// `GET /v1/events[?topic=PATTERN]`: Server-Sent Events, one per bus event, lifecycle
/// transitions included; the stream ends when the daemon shuts down.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses(
        (status = 200, description = "text/event-stream; each `data:` is one event", body = EventJson, content_type = "text/event-stream"),
        (status = 400, description = "malformed query", body = ApiError),
        (status = 403, description = "Host header not allowed", body = ApiError),
    )
)]
async fn events(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::new(Code::InvalidArgument, rejection.body_text()))?;
    let pattern = query.topic.unwrap_or_else(|| "*".to_owned());
    let stream = BroadcastStream::new(state.host.subscribe())
        .filter_map(move |event| {
            let event = event.ok().filter(|event| events::topic_matches(&pattern, &event.topic));
            std::future::ready(event.map(|event| {
                let json = serde_json::to_string(&EventJson::from(event)).unwrap_or_default();
                Ok(SseEvent::default().event("event").data(json))
            }))
        })
        .take_until(state.shutdown.wait());
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The query of `GET /v1/crashes`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct CrashesQuery {
    /// Only this plugin's crashes. Default: every plugin's.
    plugin: Option<String>,
}

/// `GET /v1/crashes[?plugin=ID]`: crash reports, oldest first (the last 256 are kept).
#[utoipa::path(get, path = "/v1/crashes", tag = "plugins", params(CrashesQuery),
    responses(
        (status = 200, description = "Crash reports, oldest first", body = Vec<crate::daemon::openapi::CrashSchema>),
        (status = 400, description = "malformed query", body = ApiError),
        (status = 403, description = "Host header not allowed", body = ApiError),
    )
)]
async fn crashes(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<CrashesQuery>, QueryRejection>,
) -> Result<Json<Vec<plugbay_core::events::CrashReport>>, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::new(Code::InvalidArgument, rejection.body_text()))?;
    Ok(Json(state.host.crashes(query.plugin.as_deref())))
}

/// `GET /healthz`: the daemon answers.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "alive", body = Object)))]
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: the plugins folder was loaded and the daemon is not shutting down.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, description = "ready", body = Object),
    (status = 503, description = "loading or shutting down", body = ApiError),
))]
async fn readyz(State(state): State<Arc<ApiState>>) -> Result<Json<serde_json::Value>, ApiError> {
    if state.ready.load(Ordering::Acquire) {
        Ok(Json(serde_json::json!({"status": "ready"})))
    } else {
        Err(ApiError::new(Code::Unavailable, "the plugins folder is still loading"))
    }
}

/// `GET /metrics`: Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "health", responses(
    (status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"),
))]
async fn prometheus(State(state): State<Arc<ApiState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], metrics::render(&state.host.metrics()))
}

async fn no_route(request: Request) -> ApiError {
    ApiError::new(Code::NotFound, format!("no route {} {}", request.method(), request.uri().path()))
}

async fn wrong_method(request: Request) -> ApiError {
    ApiError::new(
        Code::InvalidArgument,
        format!("{} is not allowed on {}", request.method(), request.uri().path()),
    )
    .with_status(StatusCode::METHOD_NOT_ALLOWED)
}

fn bad_path(rejection: PathRejection) -> ApiError {
    ApiError::new(Code::InvalidArgument, rejection.body_text())
}

/// The `{id}` of a route, checked to be a plugin id (never a path).
fn plugin_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = path.map_err(bad_path)?;
    plugbay_core::manifest::validate_id(&id)?;
    Ok(id)
}

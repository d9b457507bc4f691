//! `/openapi.json`: the OpenAPI document of the HTTP API. The paths come from the handlers'
//! `#[utoipa::path]` annotations, registered by the same `routes!` calls that route them,
//! so a route cannot exist without being described.

use utoipa::{IntoResponses, OpenApi, ToSchema};

use crate::daemon::errors::ApiError;

/// The document's fixed parts; the paths are added by the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "plugbay",
        description = "The plugbay daemon's HTTP/JSON API: calls to plugins, plugin management, events, health and metrics. Errors are JSON {code, message, plugin?}."
    ),
    components(schemas(PluginSchema, ErrorInfoSchema, CrashSchema, CallRecordSchema))
)]
pub struct ApiDoc;

/// A plugin as the API lists it (`plugbay_core::PluginInfo` serialised).
#[derive(ToSchema)]
#[schema(as = Plugin)]
#[allow(dead_code)] // A description of JSON the library writes; never built here.
pub struct PluginSchema {
    /// The plugin id (the folder name when the manifest could not be read).
    id: String,
    /// The plugin folder.
    folder: String,
    /// The version from the manifest, if it was read.
    version: Option<String>,
    /// `native`, `process` or `wasm`, if the manifest was read.
    runtime: Option<String>,
    /// `discovered`, `loaded`, `initialized`, `running`, `draining`, `stopped`, `unloaded`,
    /// `failed`, `backing_off` or `quarantined`.
    state: String,
    /// The capabilities it provides.
    capabilities: Vec<String>,
    /// Why it is not running, when it failed.
    error: Option<ErrorInfoSchema>,
    /// Instances (replicas) serving calls now.
    instances: u64,
    /// Restarts the supervisor made since the plugin was last loaded or started by hand.
    restarts: u32,
    /// In-process calls seen running past their timeout.
    stuck_calls: u64,
    /// Loaded on its first call (`[load] lazy`).
    lazy: bool,
    /// Why the last reload failed (the previous version kept serving).
    reload_error: Option<ErrorInfoSchema>,
    /// A process plugin's sandbox (null for the other runtimes and while no instance runs).
    sandbox: Option<SandboxSchema>,
    /// The process ids of its running instances as the host sees them (process plugins).
    pids: Vec<u32>,
    /// Its signature as the host judged it at load (null while it is not loaded).
    signature: Option<SignatureSchema>,
}

/// A plugin folder's signature (`plugbay_core::trust::SignatureInfo`; docs/trust.md).
#[derive(ToSchema)]
#[schema(as = Signature)]
#[allow(dead_code)] // A description of JSON the library writes; never built here.
pub struct SignatureSchema {
    /// `valid`, `unsigned`, `invalid` or `unchecked` (the trust policy is off).
    state: String,
    /// The trusted key's name (valid signatures only).
    signer: Option<String>,
    /// The key id the signature names, 16 hex digits.
    key_id: Option<String>,
    /// Why it is not valid, or how an unsigned plugin was admitted.
    reason: Option<String>,
    /// The file the reason is about, below the plugin folder.
    file: Option<String>,
}

/// The OS sandbox of a process plugin's instance (`plugbay_core::SandboxReport`).
#[derive(ToSchema)]
#[schema(as = Sandbox)]
#[allow(dead_code)] // A description of JSON the library writes; never built here.
pub struct SandboxSchema {
    /// The host's setting: `required`, `best-effort` or `off`.
    mode: String,
    /// The layers in place: `user-namespace`, `mount-namespace`, `pid-namespace`,
    /// `network-namespace`, `ipc-uts-namespaces`, `cgroups`, `seccomp`, `landlock`.
    layers: Vec<String>,
    /// The layers that could not be built (best-effort only), each with why.
    missing: Vec<String>,
}

/// A crash: an instance that died, failed its health checks, or failed to start under a
/// restart policy (`plugbay_core::events::CrashReport` serialised).
#[derive(ToSchema)]
#[schema(as = Crash)]
#[allow(dead_code)] // A description of JSON the library writes; never built here.
pub struct CrashSchema {
    /// When, in milliseconds since the Unix epoch.
    time_ms: u64,
    /// The plugin id.
    plugin: String,
    /// Which replica (0-based).
    instance: u64,
    /// Exit status or signal, trap, init error, with the last stderr lines.
    reason: String,
    /// When a process died, how, as data: `{"exited": 0}`, `{"signaled": 9}` or `"unknown"`
    /// (absent for other failures).
    #[schema(value_type = Option<Object>)]
    exit: Option<serde_json::Value>,
    /// The instance's last calls, oldest first (never payload bytes).
    last_calls: Vec<CallRecordSchema>,
    /// What the supervisor did: `restart 1 of 5 in 100 ms`, `quarantined after ...`, ...
    action: String,
}

/// One call an instance served before it crashed.
#[derive(ToSchema)]
#[schema(as = CallRecord)]
#[allow(dead_code)] // A description of JSON the library writes; never built here.
pub struct CallRecordSchema {
    /// The method.
    method: String,
    /// Request payload size in bytes.
    payload_bytes: u64,
    /// Duration in microseconds (0 while it ran).
    duration_us: u64,
    /// `ok`, an error code, or `in flight`.
    outcome: String,
}

/// Why a plugin failed.
#[derive(ToSchema)]
#[schema(as = PluginError)]
#[allow(dead_code)] // A description of JSON the library writes; never built here.
pub struct ErrorInfoSchema {
    /// The error code (`invalid_argument`, `not_found`, ...).
    code: String,
    /// The whole message.
    message: String,
}

/// The errors every plugin route may answer, each with the JSON error body.
#[derive(IntoResponses)]
#[allow(dead_code)] // A description of responses; never built here.
pub enum PluginErrors {
    /// A malformed request or an id that cannot be a plugin id.
    #[response(status = 400)]
    BadRequest(ApiError),
    /// A mutating route without the right bearer token.
    #[response(status = 401)]
    Unauthorized(ApiError),
    /// The Host header is not one of the daemon's names.
    #[response(status = 403)]
    Forbidden(ApiError),
    /// No such plugin (or plugin folder).
    #[response(status = 404)]
    NotFound(ApiError),
    /// The plugin is not in a state for this.
    #[response(status = 409)]
    Conflict(ApiError),
    /// The daemon is shutting down.
    #[response(status = 503)]
    Unavailable(ApiError),
}

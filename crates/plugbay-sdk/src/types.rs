//! The plain types a plugin author handles: input, output, errors, events, description.

use std::collections::BTreeMap;
use std::fmt;

/// The request of one call: borrowed bytes and their content type.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The payload bytes.
    pub bytes: &'a [u8],
    /// The payload's media type, e.g. `application/json`.
    pub content_type: &'a str,
}

impl<'a> Input<'a> {
    /// Decodes the payload as JSON.
    ///
    /// # Errors
    /// `invalid_argument` with serde's message (line and column) when it does not fit `T`.
    pub fn json<T: serde::Deserialize<'a>>(&self) -> Result<T, PluginError> {
        serde_json::from_slice(self.bytes).map_err(|error| {
            PluginError::invalid_argument(format!("the request is not the expected JSON: {error}"))
        })
    }

    /// The payload as UTF-8 text.
    ///
    /// # Errors
    /// `invalid_argument` naming the byte offset when it is not UTF-8.
    pub fn text(&self) -> Result<&'a str, PluginError> {
        std::str::from_utf8(self.bytes)
            .map_err(|error| PluginError::invalid_argument(format!("the request is not UTF-8: {error}")))
    }
}

/// The response of one call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Output {
    /// The payload bytes.
    pub bytes: Vec<u8>,
    /// The media type; `None` means "the same as the request's".
    pub content_type: Option<String>,
}

impl Output {
    /// Raw bytes, tagged with the request's content type.
    pub fn bytes(bytes: impl Into<Vec<u8>>) -> Output {
        Output { bytes: bytes.into(), content_type: None }
    }

    /// UTF-8 text as `text/plain; charset=utf-8`.
    pub fn text(text: impl Into<String>) -> Output {
        Output { bytes: text.into().into_bytes(), content_type: Some("text/plain; charset=utf-8".into()) }
    }

    /// `value` serialised as JSON (`application/json`).
    ///
    /// # Errors
    /// `internal` when `value` cannot be serialised.
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Output, PluginError> {
        let bytes = serde_json::to_vec(value)
            .map_err(|error| PluginError::internal(format!("cannot encode the response as JSON: {error}")))?;
        Ok(Output { bytes, content_type: Some("application/json".into()) })
    }
}

/// An event delivered to [`crate::Plugin::on_event`].
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// The topic, e.g. `events.log`.
    pub topic: &'a str,
    /// What happened.
    pub action: &'a str,
    /// The payload.
    pub payload: &'a [u8],
    /// The payload's media type.
    pub content_type: &'a str,
    /// Who published it (a plugin id or `host`).
    pub source: &'a str,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// The error codes a plugin may return; the same set (and numbers) as the host's `Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request was malformed.
    InvalidArgument,
    /// The deadline passed.
    DeadlineExceeded,
    /// No such thing (or no such method).
    NotFound,
    /// Not allowed.
    PermissionDenied,
    /// A limit was hit.
    ResourceExhausted,
    /// Not in a state for this.
    FailedPrecondition,
    /// A bug or unexpected failure.
    Internal,
    /// Temporarily unable to serve.
    Unavailable,
}

impl ErrorCode {
    /// The status number of the C ABI (gRPC's numbering).
    pub fn status(self) -> plugbay_abi::Status {
        use plugbay_abi as abi;
        match self {
            ErrorCode::InvalidArgument => abi::STATUS_INVALID_ARGUMENT,
            ErrorCode::DeadlineExceeded => abi::STATUS_DEADLINE_EXCEEDED,
            ErrorCode::NotFound => abi::STATUS_NOT_FOUND,
            ErrorCode::PermissionDenied => abi::STATUS_PERMISSION_DENIED,
            ErrorCode::ResourceExhausted => abi::STATUS_RESOURCE_EXHAUSTED,
            ErrorCode::FailedPrecondition => abi::STATUS_FAILED_PRECONDITION,
            ErrorCode::Internal => abi::STATUS_INTERNAL,
            ErrorCode::Unavailable => abi::STATUS_UNAVAILABLE,
        }
    }

    /// The code for a status number; unknown numbers become `Internal`.
    pub fn from_status(status: plugbay_abi::Status) -> ErrorCode {
        [
            ErrorCode::InvalidArgument,
            ErrorCode::DeadlineExceeded,
            ErrorCode::NotFound,
            ErrorCode::PermissionDenied,
            ErrorCode::ResourceExhausted,
            ErrorCode::FailedPrecondition,
            ErrorCode::Internal,
            ErrorCode::Unavailable,
        ]
        .into_iter()
        .find(|code| code.status() == status)
        .unwrap_or(ErrorCode::Internal)
    }
}

/// An error a plugin returns: a code and a message, passed to the caller unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// The kind of failure.
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
}

impl PluginError {
    /// An error with any code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> PluginError {
        PluginError { code, message: message.into() }
    }

    /// `invalid_argument`: the request was malformed.
    pub fn invalid_argument(message: impl Into<String>) -> PluginError {
        PluginError::new(ErrorCode::InvalidArgument, message)
    }

    /// `not_found`.
    pub fn not_found(message: impl Into<String>) -> PluginError {
        PluginError::new(ErrorCode::NotFound, message)
    }

    /// `internal`.
    pub fn internal(message: impl Into<String>) -> PluginError {
        PluginError::new(ErrorCode::Internal, message)
    }

    /// `not_found` for a method this plugin does not implement.
    pub fn unknown_method(method: &str) -> PluginError {
        PluginError::not_found(format!("this plugin has no method {method:?}"))
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for PluginError {}

impl From<serde_json::Error> for PluginError {
    fn from(error: serde_json::Error) -> PluginError {
        PluginError::invalid_argument(format!("JSON: {error}"))
    }
}

/// What a plugin is and provides, compared with its manifest at load.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Description {
    /// The plugin id (`[a-z0-9-]`, as in `plugin.toml`).
    pub id: String,
    /// The plugin's semver version.
    pub version: String,
    /// Capability -> methods, as in the manifest's `[provides]`.
    pub provides: BTreeMap<String, Vec<String>>,
}

impl Description {
    /// A description with no capabilities yet.
    pub fn new(id: &str, version: &str) -> Description {
        Description { id: id.to_owned(), version: version.to_owned(), provides: BTreeMap::new() }
    }

    /// Adds a capability and its methods.
    pub fn provides(mut self, capability: &str, methods: &[&str]) -> Description {
        self.provides.insert(capability.to_owned(), methods.iter().map(|m| (*m).to_owned()).collect());
        self
    }
}

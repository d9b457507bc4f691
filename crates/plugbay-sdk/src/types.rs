//! The plain types a plugin author handles: input, output, errors, events, description.

use std::collections::BTreeMap;
use std::fmt;

/// Severity of a log line: the contract's own [`plugbay_abi::LogLevel`].
pub use plugbay_abi::LogLevel;

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

/// The error codes a plugin may return: the host's own [`plugbay_abi::Code`] (the same set
/// and numbers on every contract), under the name the SDK has always used.
pub use plugbay_abi::Code as ErrorCode;

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

/// The response of [`crate::Host::invoke`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The payload bytes.
    pub bytes: Vec<u8>,
    /// Their media type.
    pub content_type: String,
}

impl Response {
    /// Decodes the response as JSON.
    ///
    /// # Errors
    /// `invalid_argument` when it does not fit `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, PluginError> {
        Ok(serde_json::from_slice(&self.bytes)?)
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

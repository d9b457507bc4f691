//! The call vocabulary: [`Call`], [`Target`], [`Payload`], [`ContentType`], [`Deadline`].

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::{Error, Result};

/// A media type such as `application/json`. Cheap to clone: well-known types are static.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContentType(Cow<'static, str>);

impl ContentType {
    /// `application/json`.
    pub const JSON: ContentType = ContentType(Cow::Borrowed("application/json"));
    /// `application/octet-stream`, the default for raw bytes.
    pub const OCTET_STREAM: ContentType = ContentType(Cow::Borrowed("application/octet-stream"));
    /// `text/plain; charset=utf-8`.
    pub const TEXT: ContentType = ContentType(Cow::Borrowed("text/plain; charset=utf-8"));

    /// A content type from any string; well-known ones are interned.
    pub fn new(value: impl Into<String>) -> ContentType {
        let value = value.into();
        match value.as_str() {
            "application/json" => ContentType::JSON,
            "application/octet-stream" => ContentType::OCTET_STREAM,
            "text/plain; charset=utf-8" => ContentType::TEXT,
            _ => ContentType(Cow::Owned(value)),
        }
    }

    /// The media type as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ContentType {
    fn default() -> ContentType {
        ContentType::OCTET_STREAM
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Bytes with a content type: what a call carries in and out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Payload {
    /// The bytes. `Bytes` clones share the buffer, so passing a payload on never copies.
    pub bytes: Bytes,
    /// What the bytes are.
    pub content_type: ContentType,
}

impl Payload {
    /// Raw bytes as `application/octet-stream`.
    pub fn bytes(bytes: impl Into<Bytes>) -> Payload {
        Payload { bytes: bytes.into(), content_type: ContentType::OCTET_STREAM }
    }

    /// Bytes with a content type.
    pub fn with_type(bytes: impl Into<Bytes>, content_type: ContentType) -> Payload {
        Payload { bytes: bytes.into(), content_type }
    }

    /// A JSON payload serialised from `value`.
    ///
    /// # Errors
    /// `invalid_argument` when `value` cannot be serialised (e.g. a map with non-string keys).
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Payload> {
        let bytes = serde_json::to_vec(value)
            .map_err(|error| Error::invalid(format!("cannot encode the payload as JSON: {error}")))?;
        Ok(Payload { bytes: bytes.into(), content_type: ContentType::JSON })
    }

    /// Decodes the payload as JSON.
    ///
    /// # Errors
    /// `invalid_argument` naming the position when the bytes are not JSON of that shape.
    pub fn to_json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.bytes)
            .map_err(|error| Error::invalid(format!("the payload is not the expected JSON: {error}")))
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the payload has no bytes.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Who a call is addressed to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A capability such as `text.transform@1`: the scheduler picks a provider
    /// (round-robin across all running providers).
    Capability(String),
    /// One plugin by id; the method must be listed under any of its `[provides]`.
    Plugin(String),
}

impl Target {
    /// Parses the text form: `plugin:<id>` addresses a plugin, anything else a capability.
    pub fn parse(text: &str) -> Target {
        match text.strip_prefix("plugin:") {
            Some(id) => Target::Plugin(id.to_owned()),
            None => Target::Capability(text.to_owned()),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Capability(capability) => f.write_str(capability),
            Target::Plugin(id) => write!(f, "plugin:{id}"),
        }
    }
}

/// The latest moment a call may finish.
///
/// Kept on tokio's clock, the one the call's timer runs on: the same instant then holds
/// for every timer set from it (a caller and the nested calls it makes expire together),
/// and tests that pause that clock see deadlines move with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(tokio::time::Instant);

impl Deadline {
    /// A deadline `timeout` from now.
    pub fn after(timeout: Duration) -> Deadline {
        Deadline(tokio::time::Instant::now() + timeout)
    }

    /// A deadline at an instant.
    pub fn at(instant: Instant) -> Deadline {
        Deadline(tokio::time::Instant::from_std(instant))
    }

    /// The instant.
    pub fn instant(self) -> Instant {
        self.0.into_std()
    }

    /// The instant on tokio's clock, for a timer.
    pub fn timer_instant(self) -> tokio::time::Instant {
        self.0
    }

    /// Time left (zero once passed).
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(tokio::time::Instant::now())
    }
}

/// One call: `(target, method, payload, deadline)`, and how deep in plugin-to-plugin calls
/// it was made (0 for a call from outside the plugins; the host sets it for calls that
/// plugins make through the host API).
#[derive(Debug, Clone)]
pub struct Call {
    /// Who to call.
    pub target: Target,
    /// The method, e.g. `upper`. Must be whitelisted in the provider's manifest.
    pub method: String,
    /// The request.
    pub payload: Payload,
    /// When the caller stops waiting; `None` uses the plugin's `limits.timeout_ms`
    /// (or the host default). Native calls cannot be pre-empted: see the runtime docs.
    pub deadline: Option<Deadline>,
    /// Plugin-to-plugin hops that led to this call (see [`Call::depth`]).
    depth: u32,
}

impl Call {
    /// A call to a capability (or `plugin:<id>`, see [`Target::parse`]).
    pub fn new(target: &str, method: impl Into<String>, payload: Payload) -> Call {
        Call::to(Target::parse(target), method, payload)
    }

    /// A call to an already parsed [`Target`].
    pub fn to(target: Target, method: impl Into<String>, payload: Payload) -> Call {
        Call { target, method: method.into(), payload, deadline: None, depth: 0 }
    }

    /// Sets the deadline (`None`: the plugin's `limits.timeout_ms`, else the host default).
    pub fn with_deadline(mut self, deadline: Option<Deadline>) -> Call {
        self.deadline = deadline;
        self
    }

    /// How many plugin-to-plugin calls through the host led to this one: 0 for a call
    /// from outside the plugins, `n + 1` for a call a plugin makes while serving a call of
    /// depth `n`. The host refuses a call deeper than [`crate::HostConfig::max_call_depth`]
    /// with `resource_exhausted`, the same way for every runtime.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// This call, made by a plugin while it served a call of depth `parent`.
    pub(crate) fn nested_in(mut self, parent: u32) -> Call {
        self.depth = parent.saturating_add(1);
        self
    }

    /// Sets a deadline `timeout` from now.
    pub fn with_timeout(mut self, timeout: Duration) -> Call {
        self.deadline = Some(Deadline::after(timeout));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_from_text() {
        assert_eq!(Target::parse("kv@1"), Target::Capability("kv@1".into()));
        assert_eq!(Target::parse("plugin:kv-store"), Target::Plugin("kv-store".into()));
        assert_eq!(Target::parse("plugin:kv-store").to_string(), "plugin:kv-store");
    }

    #[test]
    fn json_payload_round_trips() {
        let payload = Payload::json(&serde_json::json!({"a": 1})).unwrap();
        assert_eq!(payload.content_type, ContentType::JSON);
        let value: serde_json::Value = payload.to_json().unwrap();
        assert_eq!(value["a"], 1);
        let error = Payload::bytes(&b"{"[..]).to_json::<serde_json::Value>().unwrap_err();
        assert_eq!(error.code(), crate::Code::InvalidArgument);
    }
}

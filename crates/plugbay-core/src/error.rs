//! [`Code`] and [`Error`]: what went wrong, in terms a caller (and the gRPC and HTTP APIs)
//! can act on, with the context that says where.

use std::fmt;
use std::path::{Path, PathBuf};

/// The kind of failure; defined with its C, gRPC and JSON names in the contract crate
/// ([`plugbay_abi::Code`]) and re-exported here.
pub use plugbay_abi::Code;

/// A plugbay error: a [`Code`], a message, and the context that locates it.
///
/// Display renders everything a person needs in one line, e.g.
/// `invalid_argument: plugin log-x: plugins/log-x/plugin.toml:2:6: field plugin.id: ...`.
/// The details live behind one box, so a `Result<T, Error>` stays small on the call path.
#[derive(Debug)]
pub struct Error {
    inner: Box<Details>,
}

#[derive(Debug)]
struct Details {
    code: Code,
    message: String,
    plugin: Option<String>,
    file: Option<PathBuf>,
    position: Option<(usize, usize)>,
    field: Option<String>,
    method: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// `Result` with plugbay's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with a code and a message, no context yet.
    pub fn new(code: Code, message: impl Into<String>) -> Error {
        Error::from(Details {
            code,
            message: message.into(),
            plugin: None,
            file: None,
            position: None,
            field: None,
            method: None,
            source: None,
        })
    }

    /// Shorthand for [`Code::InvalidArgument`].
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(Code::InvalidArgument, message)
    }

    /// Shorthand for [`Code::Internal`].
    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(Code::Internal, message)
    }

    /// Shorthand for [`Code::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> Error {
        Error::new(Code::Unavailable, message)
    }

    /// Shorthand for [`Code::FailedPrecondition`].
    pub fn precondition(message: impl Into<String>) -> Error {
        Error::new(Code::FailedPrecondition, message)
    }

    /// Shorthand for [`Code::PermissionDenied`].
    pub fn denied(message: impl Into<String>) -> Error {
        Error::new(Code::PermissionDenied, message)
    }

    /// Shorthand for [`Code::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(Code::NotFound, message)
    }

    /// Names the plugin the error is about (kept if one is already set).
    pub fn with_plugin(mut self, id: impl Into<String>) -> Error {
        if self.inner.plugin.is_none() {
            self.inner.plugin = Some(id.into());
        }
        self
    }

    /// Names the file the error is about (kept if one is already set).
    pub fn with_file(mut self, path: impl AsRef<Path>) -> Error {
        if self.inner.file.is_none() {
            self.inner.file = Some(path.as_ref().to_path_buf());
        }
        self
    }

    /// Adds a 1-based line and column inside the file.
    pub fn with_position(mut self, line: usize, column: usize) -> Error {
        self.inner.position = Some((line, column));
        self
    }

    /// Names the field (`plugin.id`, `provides."log.parse@1"`).
    pub fn with_field(mut self, field: impl Into<String>) -> Error {
        if self.inner.field.is_none() {
            self.inner.field = Some(field.into());
        }
        self
    }

    /// Names the method of a call.
    pub fn with_method(mut self, method: impl Into<String>) -> Error {
        if self.inner.method.is_none() {
            self.inner.method = Some(method.into());
        }
        self
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.inner.source = Some(Box::new(source));
        self
    }

    /// What kind of failure this is.
    pub fn code(&self) -> Code {
        self.inner.code
    }

    /// The message alone, without the context.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The plugin the error is about, if known.
    pub fn plugin(&self) -> Option<&str> {
        self.inner.plugin.as_deref()
    }

    /// The file the error is about, if any.
    pub fn file(&self) -> Option<&Path> {
        self.inner.file.as_deref()
    }

    /// The 1-based `(line, column)` in [`Error::file`], where the parser gave one.
    pub fn position(&self) -> Option<(usize, usize)> {
        self.inner.position
    }

    /// The manifest field the error is about, if any.
    pub fn field(&self) -> Option<&str> {
        self.inner.field.as_deref()
    }

    /// The method of the call the error is about, if any.
    pub fn method(&self) -> Option<&str> {
        self.inner.method.as_deref()
    }
}

impl fmt::Display for Details {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.code)?;
        if let Some(plugin) = &self.plugin {
            write!(f, "plugin {plugin}: ")?;
        }
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some((line, column)) = self.position {
                write!(f, ":{line}:{column}")?;
            }
            f.write_str(": ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "field {field}: ")?;
        }
        if let Some(method) = &self.method {
            write!(f, "method {method}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source.as_deref().map(|source| source as &(dyn std::error::Error + 'static))
    }
}

impl From<Details> for Error {
    fn from(details: Details) -> Error {
        Error { inner: Box::new(details) }
    }
}

impl Error {
    /// The underlying cause, if one was attached with [`Error::with_source`].
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.inner.source.as_deref()
    }
}

/// An error as a gRPC status: the code's number and the whole message with its context.
/// The one conversion every gRPC face of the host uses (the daemon's API, the process
/// runtime's callback service).
impl From<Error> for tonic::Status {
    fn from(error: Error) -> tonic::Status {
        tonic::Status::new(tonic::Code::from_i32(error.code().grpc()), error.to_string())
    }
}

/// A gRPC status (from a plugin or a remote host) as an error with the same code and its
/// message; a code plugbay does not use (`unknown`, `cancelled`, ...) becomes `internal`,
/// naming it.
impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Error {
        match Code::from_grpc(status.code() as i32) {
            Some(code) => Error::new(code, status.message().to_owned()),
            None => Error::internal(format!("gRPC status {:?}: {}", status.code(), status.message())),
        }
    }
}

impl From<std::convert::Infallible> for Error {
    fn from(never: std::convert::Infallible) -> Error {
        match never {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_every_piece_of_context() {
        let error = Error::invalid("must match [a-z0-9-]")
            .with_plugin("Log_X")
            .with_file("plugins/Log_X/plugin.toml")
            .with_position(2, 6)
            .with_field("plugin.id");
        assert_eq!(
            error.to_string(),
            "invalid_argument: plugin Log_X: plugins/Log_X/plugin.toml:2:6: field plugin.id: must match [a-z0-9-]"
        );
    }

    #[test]
    fn errors_cross_grpc_with_their_code_both_ways() {
        for code in Code::ALL {
            let status = tonic::Status::from(Error::new(code, "x").with_plugin("p"));
            assert_eq!(status.code() as i32, code.grpc(), "{code}");
            assert_eq!(status.message(), format!("{code}: plugin p: x"));
            let back = Error::from(tonic::Status::new(status.code(), "y"));
            assert_eq!((back.code(), back.message()), (code, "y"));
        }
        let unknown = Error::from(tonic::Status::unknown("z"));
        assert_eq!(unknown.code(), Code::Internal);
        assert!(unknown.message().contains("Unknown") && unknown.message().contains('z'), "{unknown}");
    }

    #[test]
    fn codes_serialise_by_their_snake_case_names() {
        for code in Code::ALL {
            assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{}\"", code.as_str()));
        }
    }
}

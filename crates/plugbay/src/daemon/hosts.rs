//! The DNS-rebinding defence both APIs apply: every name a request is addressed to (the
//! `Host` header, the request target's authority, HTTP/2's `:authority`) must be one of
//! `api.allowed_hosts`. The HTTP API's guard calls [`check`]; the gRPC server wraps its
//! services in [`HostCheckLayer`].

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{Request, Response, header};
use futures_util::future::{Either, Ready, ready};
use plugbay_core::Code;

/// A refused request: the code and the message both APIs answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `permission_denied` for a name not allowed, `invalid_argument` for a request that
    /// names no host at all.
    pub code: Code,
    /// Names the refused host and the config key that allows it.
    pub message: String,
}

/// Checks the names `request` is addressed to against `allowed` (host names without ports,
/// compared without regard to case). A request must name a host, and every name it carries
/// must be allowed, so a `Host` header cannot vouch for a different `:authority`.
///
/// # Errors
/// A [`Refusal`] naming the first name that is not allowed.
pub fn check<B>(allowed: &[String], request: &Request<B>) -> Result<(), Refusal> {
    let host = request.headers().get(header::HOST);
    let host = host
        .map(|value| {
            value.to_str().map_err(|_| Refusal {
                code: Code::InvalidArgument,
                message: "the Host header is not ASCII".to_owned(),
            })
        })
        .transpose()?;
    let authority = request.uri().authority().map(|authority| authority.as_str());
    if host.is_none() && authority.is_none() {
        return Err(Refusal {
            code: Code::InvalidArgument,
            message: "the request names no host (no Host header or :authority)".to_owned(),
        });
    }
    for (label, named) in [("Host", host), ("authority", authority)] {
        let Some(named) = named else { continue };
        let name = host_name(named);
        if !allowed.iter().any(|allowed| allowed.eq_ignore_ascii_case(name)) {
            return Err(Refusal {
                code: Code::PermissionDenied,
                message: format!(
                    "{label} {name:?} is not one of this daemon's names ({}); see api.allowed_hosts",
                    allowed.join(", ")
                ),
            });
        }
    }
    Ok(())
}

/// The host name of an authority (`localhost:7878` -> `localhost`, `[::1]:80` -> `[::1]`).
fn host_name(authority: &str) -> &str {
    match authority.rfind(':') {
        Some(colon) if !authority[colon..].contains(']') => &authority[..colon],
        _ => authority,
    }
}

/// The gRPC server's [`check`]: a refused call is answered with the refusal's code and
/// message as its gRPC status (trailers-only), before any service sees it.
#[derive(Debug, Clone)]
pub struct HostCheckLayer {
    allowed: Arc<[String]>,
}

impl HostCheckLayer {
    /// A layer allowing `allowed` (`api.allowed_hosts`).
    pub fn new(allowed: &[String]) -> HostCheckLayer {
        HostCheckLayer { allowed: allowed.into() }
    }
}

impl<S> tower::Layer<S> for HostCheckLayer {
    type Service = HostCheck<S>;

    fn layer(&self, inner: S) -> HostCheck<S> {
        HostCheck { inner, allowed: self.allowed.clone() }
    }
}

/// The service [`HostCheckLayer`] wraps around the gRPC services.
#[derive(Debug, Clone)]
pub struct HostCheck<S> {
    inner: S,
    allowed: Arc<[String]>,
}

impl<S, B, ResBody> tower::Service<Request<B>> for HostCheck<S>
where
    S: tower::Service<Request<B>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response<ResBody>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match check(&self.allowed, &request) {
            Ok(()) => Either::Right(self.inner.call(request)),
            Err(refusal) => {
                let status = tonic::Status::new(tonic::Code::from_i32(refusal.code.grpc()), refusal.message);
                Either::Left(ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
    }

    fn request(host: Option<&str>, uri: &str) -> Request<()> {
        let mut builder = Request::builder().uri(uri);
        if let Some(host) = host {
            builder = builder.header(header::HOST, host);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn host_names_drop_the_port_but_keep_ipv6_brackets() {
        assert_eq!(host_name("localhost:7878"), "localhost");
        assert_eq!(host_name("localhost"), "localhost");
        assert_eq!(host_name("[::1]:7878"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
    }

    #[test]
    fn every_name_a_request_carries_must_be_allowed() {
        assert_eq!(check(&allowed(), &request(Some("LocalHost:7878"), "/x")), Ok(()));
        assert_eq!(check(&allowed(), &request(None, "http://127.0.0.1:7879/svc/M")), Ok(()));
        let refused = check(&allowed(), &request(None, "http://evil.example:7879/svc/M")).unwrap_err();
        assert_eq!(refused.code, Code::PermissionDenied);
        assert!(
            refused.message.contains("\"evil.example\"") && refused.message.contains("api.allowed_hosts"),
            "{}",
            refused.message
        );
        // A good Host header does not vouch for another authority, nor the reverse.
        let mixed = request(Some("localhost"), "http://evil.example/x");
        assert_eq!(check(&allowed(), &mixed).unwrap_err().code, Code::PermissionDenied);
        let mixed = request(Some("evil.example"), "http://localhost/x");
        assert_eq!(check(&allowed(), &mixed).unwrap_err().code, Code::PermissionDenied);
        assert_eq!(check(&allowed(), &request(None, "/x")).unwrap_err().code, Code::InvalidArgument);
    }
}

//! The command line as a client of a running daemon: one HTTP/1.1 request per command to
//! the HTTP/JSON API, the token (if any) from `PLUGBAY_TOKEN`.

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use plugbay_core::ErrorInfo;
use tokio::net::TcpStream;

use crate::daemon::config::TOKEN_ENV;

/// A daemon at an address.
pub struct Daemon {
    addr: String,
}

impl Daemon {
    /// The daemon at `addr` (`HOST:PORT`).
    pub fn new(addr: &str) -> Daemon {
        Daemon { addr: addr.to_owned() }
    }

    /// Sends one request and returns the response with its body still to be read.
    ///
    /// # Errors
    /// When the daemon cannot be reached or the exchange fails.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Bytes)>,
        headers: &[(&str, String)],
    ) -> anyhow::Result<Response<Incoming>> {
        let stream = TcpStream::connect(&self.addr).await.with_context(|| {
            format!(
                "cannot reach the daemon at {} (start it with `plugbay run`, or pass --plugins DIR)",
                self.addr
            )
        })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("cannot talk HTTP to {}", self.addr))?;
        tokio::spawn(connection);
        let mut request = Request::builder().method(method).uri(path).header(HOST, &self.addr);
        if let Ok(token) = std::env::var(TOKEN_ENV) {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let body = match body {
            Some((content_type, bytes)) => {
                request = request.header(CONTENT_TYPE, content_type);
                bytes
            }
            None => Bytes::new(),
        };
        let request = request.body(Full::new(body)).context("cannot build the request")?;
        sender.send_request(request).await.with_context(|| format!("the request to {} failed", self.addr))
    }

    /// Sends a request and reads the whole response: `Ok(body)` for a 2xx, `Err(error)`
    /// with the daemon's `{code, message}` otherwise.
    ///
    /// # Errors
    /// When the daemon cannot be reached, or answers something that is not the API's.
    pub async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Bytes)>,
        headers: &[(&str, String)],
    ) -> anyhow::Result<Result<(String, Bytes), ErrorInfo>> {
        let response = self.send(method, path, body, headers).await?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let bytes =
            response.into_body().collect().await.context("cannot read the daemon's answer")?.to_bytes();
        if status.is_success() {
            return Ok(Ok((content_type, bytes)));
        }
        match serde_json::from_slice::<ErrorInfo>(&bytes) {
            Ok(error) => Ok(Err(error)),
            Err(_) => bail!("the daemon answered {status}: {}", String::from_utf8_lossy(&bytes)),
        }
    }
}

/// A path segment with everything but unreserved characters (and `@`, `:`) percent-encoded.
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~@:".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_keep_capabilities_readable_and_encode_the_rest() {
        assert_eq!(segment("text.transform@1"), "text.transform@1");
        assert_eq!(segment("plugin:kv-store"), "plugin:kv-store");
        assert_eq!(segment("../x y"), "..%2Fx%20y");
    }
}

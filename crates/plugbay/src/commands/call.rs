//! `plugbay call`: make one call (through the daemon, or a folder loaded here), print the
//! response.

use std::io::{Read as _, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use hyper::Method;
use plugbay_core::{Call, ContentType, Error, ErrorInfo, Host, Payload, State, Target};
use serde::Serialize;
use serde_json::Value;

use crate::cli::CallArgs;
use crate::client::{Daemon, segment};
use crate::commands::{Outcome, load_plugins, print_json};

/// A successful call, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Response {
    /// The id of the plugin that answered (null through the daemon without --plugin).
    plugin: Option<String>,
    /// The response's media type.
    content_type: String,
    /// How `payload` holds the bytes: `json` (the JSON value itself), `utf-8` (a string)
    /// or `hex` (a string of hex digits, for bytes that are not UTF-8).
    encoding: &'static str,
    /// The response.
    payload: Value,
}

/// A failed call, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Failure<'a> {
    /// `{code, message}`.
    error: &'a ErrorInfo,
}

/// Runs `plugbay call`: [`Outcome::Done`] with the response on stdout, or
/// [`Outcome::Failed`] with `error: <code>: <message>` on stderr. Plugins that fail to
/// load are reported on stderr as warnings; the call goes ahead without them.
///
/// # Errors
/// When the request file or the plugins folder cannot be read, or stdout cannot be written.
pub async fn run(args: &CallArgs) -> anyhow::Result<Outcome> {
    let payload = request(args)?;
    let result = match &args.plugins {
        Some(dir) => {
            let (host, report) = load_plugins(dir, &args.sandbox).await?;
            for error in &report.failed {
                eprintln!("warning: not loaded: {error}");
            }
            call(&host, args, payload).await.map(|(plugin, response)| (Some(plugin), response)).map_err(
                |error| {
                    eprintln!("error: {error}");
                    ErrorInfo::from(&error)
                },
            )
        }
        None => call_daemon(args, payload)
            .await?
            .map(|response| (args.plugin.clone(), response))
            .inspect_err(|error| eprintln!("error: {}", error.message)),
    };
    match result {
        Ok((plugin, response)) => {
            if args.json {
                let (encoding, payload) = decode(&response);
                let content_type = response.content_type.as_str().to_owned();
                print_json(&Response { plugin, content_type, encoding, payload })?;
            } else {
                write_raw(&mut std::io::stdout().lock(), &response)?;
            }
            Ok(Outcome::Done)
        }
        Err(error) => {
            if args.json {
                print_json(&Failure { error: &error })?;
            }
            Ok(Outcome::Failed)
        }
    }
}

/// Makes the call through the daemon's `POST /v1/call/{capability}/{method}`; with
/// --plugin the target is that plugin.
async fn call_daemon(args: &CallArgs, payload: Payload) -> anyhow::Result<Result<Payload, ErrorInfo>> {
    let target = match &args.plugin {
        Some(id) => format!("plugin:{id}"),
        None => args.capability.clone(),
    };
    let path = format!("/v1/call/{}/{}", segment(&target), segment(&args.method));
    let headers: Vec<(&str, String)> =
        args.timeout_ms.map(|ms| ("x-plugbay-timeout-ms", ms.to_string())).into_iter().collect();
    let daemon = Daemon::new(&args.daemon.addr);
    let answer = daemon
        .exchange(Method::POST, &path, Some((payload.content_type.as_str(), payload.bytes)), &headers)
        .await?;
    Ok(answer.map(|(content_type, bytes)| Payload::with_type(bytes, ContentType::new(content_type))))
}

/// The request: PAYLOAD (JSON if it parses as JSON, text otherwise), the bytes of --file
/// (octet-stream), or nothing; --content-type overrides the guessed type.
fn request(args: &CallArgs) -> anyhow::Result<Payload> {
    let (bytes, guessed) = match (&args.payload, &args.file) {
        (Some(text), _) => {
            let is_json = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
            (text.clone().into_bytes(), if is_json { ContentType::JSON } else { ContentType::TEXT })
        }
        (None, Some(file)) => (read_file(file)?, ContentType::OCTET_STREAM),
        (None, None) => (Vec::new(), ContentType::OCTET_STREAM),
    };
    let content_type = args.content_type.clone().map_or(guessed, ContentType::new);
    Ok(Payload::with_type(bytes, content_type))
}

/// The bytes of `file`, or of stdin for `-`.
fn read_file(file: &Path) -> anyhow::Result<Vec<u8>> {
    if file == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin().lock().read_to_end(&mut bytes).context("cannot read the request from stdin")?;
        return Ok(bytes);
    }
    std::fs::read(file).with_context(|| format!("cannot read the request from {}", file.display()))
}

/// Makes the call; returns who answered and the response.
///
/// Without --plugin the target is resolved first, so the answer can name the plugin that
/// gave it; the call then goes to that plugin.
async fn call(host: &Host, args: &CallArgs, payload: Payload) -> plugbay_core::Result<(String, Payload)> {
    let plugin = match &args.plugin {
        Some(id) => {
            let info = host.plugin(id)?;
            if info.state != State::Running {
                let why = info.error.map(|error| format!(": {}", error.message)).unwrap_or_default();
                return Err(Error::unavailable(format!("the plugin is {}, not running{why}", info.state))
                    .with_plugin(id));
            }
            if !info.capabilities.contains(&args.capability) {
                let provided = if info.capabilities.is_empty() {
                    "none".to_owned()
                } else {
                    info.capabilities.join(", ")
                };
                return Err(Error::not_found(format!(
                    "the plugin does not provide {} (it provides: {provided})",
                    args.capability
                ))
                .with_plugin(id));
            }
            id.clone()
        }
        None => host.resolve(&Target::parse(&args.capability), &args.method)?.plugin().to_owned(),
    };
    tracing::info!(%plugin, capability = %args.capability, method = %args.method, "calling");
    let mut call = Call::new(&format!("plugin:{plugin}"), args.method.clone(), payload);
    if let Some(timeout_ms) = args.timeout_ms {
        call = call.with_timeout(Duration::from_millis(timeout_ms));
    }
    let response = host.invoke(call).await?;
    Ok((plugin, response))
}

/// The media type without parameters, in lower case (`text/plain`).
fn media_type(content_type: &ContentType) -> String {
    content_type.as_str().split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// Whether the content type is JSON (`application/json` or `…+json`).
fn is_json(content_type: &ContentType) -> bool {
    let media_type = media_type(content_type);
    media_type == "application/json" || media_type.ends_with("+json")
}

/// Whether the content type is text a terminal can show (`text/*` or JSON).
fn is_text(content_type: &ContentType) -> bool {
    media_type(content_type).starts_with("text/") || is_json(content_type)
}

/// The response for `--json`: the JSON value itself, a string, or hex digits.
fn decode(response: &Payload) -> (&'static str, Value) {
    if is_json(&response.content_type)
        && let Ok(value) = serde_json::from_slice::<Value>(&response.bytes)
    {
        return ("json", value);
    }
    match std::str::from_utf8(&response.bytes) {
        Ok(text) => ("utf-8", Value::from(text)),
        Err(_) => {
            let hex: String = response.bytes.iter().map(|byte| format!("{byte:02x}")).collect();
            ("hex", Value::from(hex))
        }
    }
}

/// Writes the response bytes as they are, plus a newline after text that does not end in
/// one.
fn write_raw(out: &mut impl Write, response: &Payload) -> std::io::Result<()> {
    out.write_all(&response.bytes)?;
    if is_text(&response.content_type) && !response.bytes.is_empty() && !response.bytes.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_decode_by_content_type() {
        let json = Payload::with_type(&b"{\"a\":1}"[..], ContentType::JSON);
        assert_eq!(decode(&json), ("json", serde_json::json!({"a": 1})));
        let text = Payload::with_type(&b"hi"[..], ContentType::TEXT);
        assert_eq!(decode(&text), ("utf-8", Value::from("hi")));
        let bad_json = Payload::with_type(&b"{"[..], ContentType::new("application/problem+json"));
        assert_eq!(decode(&bad_json), ("utf-8", Value::from("{")));
        let binary = Payload::bytes(&[0xff, 0x00][..]);
        assert_eq!(decode(&binary), ("hex", Value::from("ff00")));
    }

    #[test]
    fn text_gets_a_final_newline_and_bytes_do_not() {
        let mut out = Vec::new();
        write_raw(&mut out, &Payload::with_type(&b"\"HELLO\""[..], ContentType::JSON)).unwrap();
        assert_eq!(out, b"\"HELLO\"\n");
        let mut out = Vec::new();
        write_raw(&mut out, &Payload::bytes(&b"\x01\x02"[..])).unwrap();
        assert_eq!(out, b"\x01\x02");
    }
}

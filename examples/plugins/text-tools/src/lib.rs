//! `text-tools`: an example plugbay plugin written in Rust, built both ways from this one
//! source: a native plugin (the `cdylib`, through [`plugbay_sdk::export_plugin!`]) and a
//! process plugin (the `text-tools-process` program in `src/main.rs`, through
//! `plugbay_sdk::serve`, with `--features process`).
//!
//! It provides the capability `text.transform@1` with four methods:
//!
//! | method       | request                | response                                      |
//! |--------------|------------------------|-----------------------------------------------|
//! | `upper`      | a JSON string `"hi"`   | the JSON string in upper case `"HI"`           |
//! | `lower`      | a JSON string          | the JSON string in lower case                 |
//! | `reverse`    | a JSON string          | the JSON string with its characters reversed  |
//! | `word-count` | a JSON string          | `{"words": N, "chars": N, "lines": N}`         |
//!
//! A request whose content type is `text/plain` (with or without parameters such as
//! `; charset=utf-8`) is taken as raw UTF-8 text instead, and `upper`, `lower` and
//! `reverse` then answer raw text as `text/plain; charset=utf-8`. `word-count` always
//! answers JSON, since its result is a record.
//!
//! The plugin keeps no state, so the host may call it from many threads at once. Build it
//! with `cargo xtask plugins`, which copies `plugin.toml` next to the library in
//! `target/plugins/text-tools/`, and `plugin-process.toml` (as `plugin.toml`) next to the
//! program in `target/plugins-process/text-tools/`.

use plugbay_sdk::{Description, Host, Input, LogLevel, Output, Plugin, PluginError};
use serde::Serialize;

/// The capability this plugin provides.
pub const CAPABILITY: &str = "text.transform@1";

/// The methods of [`CAPABILITY`], as listed in `plugin.toml`.
pub const METHODS: &[&str] = &["upper", "lower", "reverse", "word-count"];

/// The plugin instance. It holds no state.
#[derive(Debug)]
pub struct TextTools;

/// The result of `word-count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Runs of non-whitespace characters (Unicode whitespace separates words).
    pub words: usize,
    /// Unicode scalar values (Rust `char`s), not bytes.
    pub chars: usize,
    /// Lines as [`str::lines`] counts them: a final line break does not start a new line,
    /// and the empty text has no lines.
    pub lines: usize,
}

impl Counts {
    /// Counts `text`.
    pub fn of(text: &str) -> Counts {
        Counts {
            words: text.split_whitespace().count(),
            chars: text.chars().count(),
            lines: text.lines().count(),
        }
    }
}

/// How the request was encoded, which decides how the answer is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// A JSON string in, a JSON string out.
    Json,
    /// Raw UTF-8 text in, raw text out.
    Text,
}

/// Whether a content type is `text/plain`, ignoring case and parameters.
fn is_plain_text(content_type: &str) -> bool {
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    media_type.eq_ignore_ascii_case("text/plain")
}

/// Decodes the request text: raw text for `text/plain`, a JSON string otherwise.
fn request_text(input: Input<'_>) -> Result<(String, Encoding), PluginError> {
    if is_plain_text(input.content_type) {
        return Ok((input.text()?.to_owned(), Encoding::Text));
    }
    let value: serde_json::Value = serde_json::from_slice(input.bytes).map_err(|error| {
        PluginError::invalid_argument(format!(
            "{CAPABILITY} expects a JSON string such as \"hello\" (or raw text with content type \
             text/plain), but the request is not JSON: {error}"
        ))
    })?;
    match value {
        serde_json::Value::String(text) => Ok((text, Encoding::Json)),
        other => Err(PluginError::invalid_argument(format!(
            "{CAPABILITY} expects a JSON string such as \"hello\" (or raw text with content type \
             text/plain), but the request is a JSON {}",
            json_kind(&other)
        ))),
    }
}

/// A word for the kind of a JSON value, for error messages.
fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Encodes a transformed text the way the request was encoded.
fn answer(text: String, encoding: Encoding) -> Result<Output, PluginError> {
    match encoding {
        Encoding::Json => Output::json(&text),
        Encoding::Text => Ok(Output::text(text)),
    }
}

impl Plugin for TextTools {
    fn describe() -> Description {
        Description::new("text-tools", env!("CARGO_PKG_VERSION")).provides(CAPABILITY, METHODS)
    }

    fn init(host: Host, _config: &[u8]) -> Result<Self, PluginError> {
        host.log(LogLevel::Debug, &format!("text-tools {} ready: {CAPABILITY}", env!("CARGO_PKG_VERSION")));
        Ok(TextTools)
    }

    fn call(&self, method: &str, input: Input<'_>) -> Result<Output, PluginError> {
        // Check the method before the payload, so an unknown method is `not_found` whatever
        // the request holds.
        if !METHODS.contains(&method) {
            return Err(PluginError::unknown_method(method));
        }
        let (text, encoding) = request_text(input)?;
        match method {
            "upper" => answer(text.to_uppercase(), encoding),
            "lower" => answer(text.to_lowercase(), encoding),
            "reverse" => answer(text.chars().rev().collect(), encoding),
            "word-count" => Output::json(&Counts::of(&text)),
            other => Err(PluginError::unknown_method(other)),
        }
    }
}

plugbay_sdk::export_plugin!(TextTools);

#[cfg(test)]
mod tests {
    use plugbay_sdk::ErrorCode;

    use super::*;

    const JSON: &str = "application/json";

    fn plugin() -> TextTools {
        TextTools::init(Host::detached(), b"").expect("init")
    }

    fn call(method: &str, payload: &str, content_type: &str) -> Result<Output, PluginError> {
        plugin().call(method, Input { bytes: payload.as_bytes(), content_type })
    }

    fn call_ok(method: &str, payload: &str, content_type: &str) -> (String, Option<String>) {
        let output = call(method, payload, content_type).expect("call succeeds");
        (String::from_utf8(output.bytes).expect("UTF-8"), output.content_type)
    }

    #[test]
    fn describe_matches_the_manifest() {
        let description = TextTools::describe();
        assert_eq!(description.id, "text-tools");
        assert_eq!(description.version, "0.1.0");
        assert_eq!(description.provides.len(), 1);
        assert_eq!(description.provides[CAPABILITY], METHODS);

        // A cheap cross-check with plugin.toml (the host compares them for real at load).
        let manifest = include_str!("../plugin.toml");
        assert!(manifest.contains(r#"id = "text-tools""#));
        assert!(manifest.contains(r#"version = "0.1.0""#));
        let methods = METHODS.iter().map(|m| format!("{m:?}")).collect::<Vec<_>>().join(", ");
        assert!(manifest.contains(&format!("{CAPABILITY:?} = [{methods}]")), "plugin.toml lists {methods}");
    }

    #[test]
    fn the_process_manifest_describes_the_same_plugin() {
        let native = include_str!("../plugin.toml");
        let process = include_str!("../plugin-process.toml");
        // The same id, version, provides, labels and limits: only the runtime and entry differ.
        let settings = |text: &'static str| -> Vec<&'static str> {
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .filter(|line| !["runtime ", "entry ", "abi "].iter().any(|key| line.starts_with(key)))
                .collect()
        };
        assert_eq!(settings(native), settings(process));
        assert!(process.contains(r#"runtime = "process""#));
        assert!(process.contains(r#"entry = "text-tools-process""#));
    }

    #[test]
    fn json_in_json_out() {
        assert_eq!(call_ok("upper", "\"hello\"", JSON), ("\"HELLO\"".into(), Some(JSON.into())));
        assert_eq!(call_ok("lower", "\"HeLLo Wörld\"", JSON).0, "\"hello wörld\"");
        assert_eq!(call_ok("reverse", "\"abc ü\"", JSON).0, "\"ü cba\"");
        // Upper-casing may change the length: ß becomes SS.
        assert_eq!(call_ok("upper", "\"straße\"", JSON).0, "\"STRASSE\"");
    }

    #[test]
    fn an_empty_content_type_is_json() {
        assert_eq!(call_ok("upper", "\"x\"", "").0, "\"X\"");
    }

    #[test]
    fn plain_text_in_plain_text_out() {
        for content_type in ["text/plain", "text/plain; charset=utf-8", "Text/Plain ;charset=UTF-8"] {
            let (text, content_type) = call_ok("upper", "hello \"you\"", content_type);
            assert_eq!(text, "HELLO \"YOU\"");
            assert_eq!(content_type.as_deref(), Some("text/plain; charset=utf-8"));
        }
        assert_eq!(call_ok("reverse", "a\nb", "text/plain").0, "b\na");
    }

    #[test]
    fn word_count_answers_json_for_both_encodings() {
        let expected = r#"{"words":4,"chars":20,"lines":2}"#;
        let (body, content_type) = call_ok("word-count", r#""one two\nthree  four\n""#, JSON);
        assert_eq!((body.as_str(), content_type.as_deref()), (expected, Some(JSON)));
        let (body, content_type) = call_ok("word-count", "one two\nthree  four\n", "text/plain");
        assert_eq!((body.as_str(), content_type.as_deref()), (expected, Some(JSON)));
    }

    #[test]
    fn counts() {
        assert_eq!(Counts::of(""), Counts { words: 0, chars: 0, lines: 0 });
        assert_eq!(Counts::of("hello"), Counts { words: 1, chars: 5, lines: 1 });
        assert_eq!(Counts::of("  a b\tc \n"), Counts { words: 3, chars: 9, lines: 1 });
        assert_eq!(Counts::of("a\n\nb"), Counts { words: 2, chars: 4, lines: 3 });
        assert_eq!(Counts::of("grüße"), Counts { words: 1, chars: 5, lines: 1 });
    }

    #[test]
    fn bad_json_is_an_invalid_argument_that_says_what_to_send() {
        for (payload, hint) in
            [("hello", "not JSON"), ("{\"text\":\"x\"}", "JSON object"), ("42", "JSON number")]
        {
            let error = call("upper", payload, JSON).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidArgument, "{payload}");
            assert!(error.message.contains(hint), "{payload}: {}", error.message);
            assert!(error.message.contains("\"hello\""), "{}", error.message);
            assert!(error.message.contains("text/plain"), "{}", error.message);
        }
    }

    #[test]
    fn text_that_is_not_utf8_is_an_invalid_argument() {
        let error =
            plugin().call("upper", Input { bytes: &[0xff, 0xfe], content_type: "text/plain" }).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument);
    }

    #[test]
    fn unknown_method_is_not_found_even_with_a_bad_payload() {
        let error = call("shout", "not json", JSON).unwrap_err();
        assert_eq!(error, PluginError::unknown_method("shout"));
        assert_eq!(error.code, ErrorCode::NotFound);
    }
}

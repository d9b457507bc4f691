//! `kv-store`: an example stateful native plugbay plugin written in Rust.
//!
//! It provides the capability `kv@1`, an in-memory key-value store whose values are any
//! JSON. Requests and responses are JSON:
//!
//! | method   | request                              | response                                  |
//! |----------|--------------------------------------|-------------------------------------------|
//! | `get`    | `{"key": "a"}`                       | `{"key": "a", "value": <JSON or null>}`   |
//! | `put`    | `{"key": "a", "value": <any JSON>}`  | `{"previous": <JSON or null>}`            |
//! | `delete` | `{"key": "a"}`                       | `{"deleted": true}`                       |
//! | `list`   | `{}` or `{"prefix": "a"}` (or empty) | `{"keys": ["a", "ab"]}`, sorted by bytes  |
//!
//! Limits: a key is 1 to [`MAX_KEY_BYTES`] bytes (`invalid_argument` otherwise), a value
//! serialises to at most [`MAX_VALUE_BYTES`] bytes of compact JSON, and the store holds at
//! most [`MAX_KEYS`] keys (both `resource_exhausted`).
//!
//! Every change is published on the host's bus under [`CHANGED_TOPIC`] as
//! `{"action": "put" | "delete" | "clear", ...}`. The plugin subscribes to
//! [`COMMANDS_TOPIC`]: an event there with action `clear` empties the store.
//!
//! The state lives in one instance (a `Mutex<BTreeMap>`), and each replica of the plugin has
//! its own. It survives restarts through snapshots: [`Plugin::snapshot`] writes the whole map
//! as JSON, the host keeps the last one (taken on every graceful stop and every `[restart]
//! snapshot_interval_ms`) and [`Plugin::restore`] reads it into the next instance, after a
//! crash too (changes since the last snapshot are lost then).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

use plugbay_sdk::{Description, ErrorCode, Event, Host, Input, LogLevel, Output, Plugin, PluginError};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The capability this plugin provides.
pub const CAPABILITY: &str = "kv@1";

/// The methods of [`CAPABILITY`], as listed in `plugin.toml`.
pub const METHODS: &[&str] = &["get", "put", "delete", "list"];

/// The topic every change is published on.
pub const CHANGED_TOPIC: &str = "kv.changed";

/// The topic the plugin subscribes to for commands (action `clear`).
pub const COMMANDS_TOPIC: &str = "kv.commands";

/// The longest key, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 256;

/// The largest value, in bytes of compact JSON (64 KiB).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// The most keys the store holds.
pub const MAX_KEYS: usize = 10_000;

/// The plugin instance: the host handle and the store.
#[derive(Debug)]
pub struct KvStore {
    host: Host,
    entries: Mutex<BTreeMap<String, Value>>,
}

/// The request of `get` and `delete`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRequest {
    key: String,
}

/// The request of `put`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutRequest {
    key: String,
    value: Value,
}

/// The request of `list`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListRequest {
    #[serde(default)]
    prefix: String,
}

/// Decodes the request of `method`, with an error that shows the expected shape.
fn decode<T: DeserializeOwned>(method: &str, input: Input<'_>, shape: &str) -> Result<T, PluginError> {
    serde_json::from_slice(input.bytes).map_err(|error| {
        PluginError::invalid_argument(format!("{CAPABILITY} {method} expects the JSON {shape}: {error}"))
    })
}

/// Checks a key against the limits.
fn check_key(key: &str) -> Result<(), PluginError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(PluginError::invalid_argument(format!(
            "a key must be 1 to {MAX_KEY_BYTES} bytes of UTF-8, but this one is {} bytes",
            key.len()
        )));
    }
    Ok(())
}

/// Checks a value against the limits.
fn check_value(value: &Value) -> Result<(), PluginError> {
    let size = json_size(value);
    if size > MAX_VALUE_BYTES {
        return Err(PluginError::new(
            ErrorCode::ResourceExhausted,
            format!("a value may be at most {MAX_VALUE_BYTES} bytes as compact JSON, but this one is {size}"),
        ));
    }
    Ok(())
}

/// The length of `value` serialised as compact JSON, counted without allocating it.
fn json_size(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Serialising a `Value` into a writer that never fails cannot fail.
    serde_json::to_writer(&mut counter, value).expect("a JSON value serialises");
    counter.0
}

impl KvStore {
    /// Locks the store. A poisoned lock is taken over: every critical section below leaves
    /// the map consistent, so a panic elsewhere cannot have broken it.
    fn entries(&self) -> MutexGuard<'_, BTreeMap<String, Value>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes a change on [`CHANGED_TOPIC`]; a refusal is logged, not returned, since the
    /// change itself has happened.
    fn changed(&self, change: &Value) {
        let payload = change.to_string();
        let action = change.get("action").and_then(Value::as_str).unwrap_or("changed");
        if let Err(error) = self.host.publish(CHANGED_TOPIC, action, payload.as_bytes(), "application/json") {
            self.host.log(LogLevel::Warn, &format!("cannot publish {CHANGED_TOPIC} {payload}: {error}"));
        }
    }

    fn get(&self, input: Input<'_>) -> Result<Output, PluginError> {
        let KeyRequest { key } = decode("get", input, r#"{"key": "..."}"#)?;
        check_key(&key)?;
        let value = self.entries().get(&key).cloned().unwrap_or(Value::Null);
        Output::json(&json!({ "key": key, "value": value }))
    }

    fn put(&self, input: Input<'_>) -> Result<Output, PluginError> {
        let PutRequest { key, value } = decode("put", input, r#"{"key": "...", "value": <any JSON>}"#)?;
        check_key(&key)?;
        check_value(&value)?;
        let previous = {
            let mut entries = self.entries();
            if entries.len() >= MAX_KEYS && !entries.contains_key(&key) {
                return Err(PluginError::new(
                    ErrorCode::ResourceExhausted,
                    format!("the store is full ({MAX_KEYS} keys); delete a key before adding another"),
                ));
            }
            entries.insert(key.clone(), value)
        };
        self.changed(&json!({ "action": "put", "key": key }));
        Output::json(&json!({ "previous": previous }))
    }

    fn delete(&self, input: Input<'_>) -> Result<Output, PluginError> {
        let KeyRequest { key } = decode("delete", input, r#"{"key": "..."}"#)?;
        check_key(&key)?;
        let deleted = self.entries().remove(&key).is_some();
        // Nothing changed when the key was absent, so nothing is published.
        if deleted {
            self.changed(&json!({ "action": "delete", "key": key }));
        }
        Output::json(&json!({ "deleted": deleted }))
    }

    fn list(&self, input: Input<'_>) -> Result<Output, PluginError> {
        let ListRequest { prefix } = if input.bytes.trim_ascii().is_empty() {
            ListRequest::default()
        } else {
            decode("list", input, r#"{} or {"prefix": "..."}"#)?
        };
        let keys: Vec<String> = self
            .entries()
            .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(key, _)| key.clone())
            .collect();
        Output::json(&json!({ "keys": keys }))
    }

    /// Empties the store and reports how many keys it held.
    fn clear(&self) -> usize {
        let removed = {
            let mut entries = self.entries();
            let removed = entries.len();
            entries.clear();
            removed
        };
        self.changed(&json!({ "action": "clear", "removed": removed }));
        removed
    }
}

/// The action of a command event: the envelope's `action`, or, when that is empty, the
/// `"action"` field of a JSON payload (for publishers that can only set the payload).
fn command_action(event: &Event<'_>) -> Option<String> {
    if !event.action.is_empty() {
        return Some(event.action.to_owned());
    }
    let payload: Value = serde_json::from_slice(event.payload).ok()?;
    payload.get("action")?.as_str().map(str::to_owned)
}

impl Plugin for KvStore {
    fn describe() -> Description {
        Description::new("kv-store", env!("CARGO_PKG_VERSION")).provides(CAPABILITY, METHODS)
    }

    fn init(host: Host, _config: &[u8]) -> Result<Self, PluginError> {
        host.log(LogLevel::Debug, &format!("kv-store {} ready: {CAPABILITY}", env!("CARGO_PKG_VERSION")));
        Ok(KvStore { host, entries: Mutex::new(BTreeMap::new()) })
    }

    fn call(&self, method: &str, input: Input<'_>) -> Result<Output, PluginError> {
        match method {
            "get" => self.get(input),
            "put" => self.put(input),
            "delete" => self.delete(input),
            "list" => self.list(input),
            other => Err(PluginError::unknown_method(other)),
        }
    }

    const SNAPSHOTS: bool = true;

    fn snapshot(&self) -> Result<Vec<u8>, PluginError> {
        serde_json::to_vec(&*self.entries())
            .map_err(|error| PluginError::internal(format!("cannot write the snapshot: {error}")))
    }

    fn restore(&self, state: &[u8]) -> Result<(), PluginError> {
        let restored: BTreeMap<String, Value> = serde_json::from_slice(state).map_err(|error| {
            PluginError::invalid_argument(format!("the snapshot is not a JSON object of keys: {error}"))
        })?;
        let count = restored.len();
        *self.entries() = restored;
        self.host.log(LogLevel::Info, &format!("restored {count} keys from the last snapshot"));
        Ok(())
    }

    fn on_event(&self, event: Event<'_>) -> Result<(), PluginError> {
        if event.topic != COMMANDS_TOPIC {
            return Err(PluginError::invalid_argument(format!(
                "kv-store subscribes to {COMMANDS_TOPIC} only, not {}",
                event.topic
            )));
        }
        match command_action(&event).as_deref() {
            Some("clear") => {
                let removed = self.clear();
                self.host
                    .log(LogLevel::Info, &format!("cleared {removed} keys (event from {})", event.source));
                Ok(())
            }
            other => Err(PluginError::invalid_argument(format!(
                "kv-store knows the action \"clear\" on {COMMANDS_TOPIC}, not {other:?}"
            ))),
        }
    }
}

plugbay_sdk::export_plugin!(KvStore);

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> KvStore {
        KvStore::init(Host::detached(), b"").expect("init")
    }

    fn call(store: &KvStore, method: &str, payload: &str) -> Result<Value, PluginError> {
        let output =
            store.call(method, Input { bytes: payload.as_bytes(), content_type: "application/json" })?;
        assert_eq!(output.content_type.as_deref(), Some("application/json"));
        Ok(serde_json::from_slice(&output.bytes).expect("the response is JSON"))
    }

    fn ok(store: &KvStore, method: &str, payload: &str) -> Value {
        call(store, method, payload).unwrap_or_else(|error| panic!("{method} {payload}: {error}"))
    }

    fn err(store: &KvStore, method: &str, payload: &str) -> PluginError {
        call(store, method, payload).expect_err("the call fails")
    }

    fn event<'a>(topic: &'a str, action: &'a str, payload: &'a [u8]) -> Event<'a> {
        Event { topic, action, payload, content_type: "application/json", source: "test", timestamp_ms: 0 }
    }

    #[test]
    fn describe_matches_the_manifest() {
        let description = KvStore::describe();
        assert_eq!((description.id.as_str(), description.version.as_str()), ("kv-store", "0.1.0"));
        assert_eq!(description.provides.len(), 1);
        assert_eq!(description.provides[CAPABILITY], METHODS);
        let manifest = include_str!("../plugin.toml");
        let methods = METHODS.iter().map(|m| format!("{m:?}")).collect::<Vec<_>>().join(", ");
        assert!(manifest.contains(&format!("{CAPABILITY:?} = [{methods}]")));
        assert!(manifest.contains(&format!("topics = [{COMMANDS_TOPIC:?}]")));
    }

    #[test]
    fn snapshot_restores_into_a_fresh_store() {
        let first = store();
        ok(&first, "put", r#"{"key": "a", "value": {"n": 1}}"#);
        ok(&first, "put", r#"{"key": "b", "value": [true]}"#);
        let state = first.snapshot().unwrap();
        let second = store();
        second.restore(&state).unwrap();
        assert_eq!(ok(&second, "get", r#"{"key": "a"}"#)["value"], json!({"n": 1}));
        assert_eq!(ok(&second, "list", "")["keys"], json!(["a", "b"]));
        assert_eq!(second.restore(b"[1]").unwrap_err().code, ErrorCode::InvalidArgument);
    }

    #[test]
    fn put_get_delete() {
        let kv = store();
        assert_eq!(ok(&kv, "get", r#"{"key":"a"}"#), json!({"key": "a", "value": null}));
        assert_eq!(ok(&kv, "put", r#"{"key":"a","value":{"n":[1,2]}}"#), json!({"previous": null}));
        assert_eq!(ok(&kv, "get", r#"{"key":"a"}"#), json!({"key": "a", "value": {"n": [1, 2]}}));
        assert_eq!(ok(&kv, "put", r#"{"key":"a","value":"two"}"#), json!({"previous": {"n": [1, 2]}}));
        assert_eq!(ok(&kv, "delete", r#"{"key":"a"}"#), json!({"deleted": true}));
        assert_eq!(ok(&kv, "delete", r#"{"key":"a"}"#), json!({"deleted": false}));
        assert_eq!(ok(&kv, "get", r#"{"key":"a"}"#), json!({"key": "a", "value": null}));
    }

    #[test]
    fn list_is_sorted_and_filters_by_prefix() {
        let kv = store();
        for key in ["b", "ab", "a", "abc", "ac", "B", "é"] {
            ok(&kv, "put", &json!({"key": key, "value": 1}).to_string());
        }
        assert_eq!(ok(&kv, "list", "{}"), json!({"keys": ["B", "a", "ab", "abc", "ac", "b", "é"]}));
        assert_eq!(ok(&kv, "list", ""), ok(&kv, "list", "{}"));
        assert_eq!(ok(&kv, "list", r#"{"prefix":"ab"}"#), json!({"keys": ["ab", "abc"]}));
        assert_eq!(ok(&kv, "list", r#"{"prefix":"a"}"#), json!({"keys": ["a", "ab", "abc", "ac"]}));
        assert_eq!(ok(&kv, "list", r#"{"prefix":"z"}"#), json!({"keys": []}));
        assert_eq!(ok(&kv, "list", r#"{"prefix":""}"#)["keys"].as_array().unwrap().len(), 7);
    }

    #[test]
    fn key_limits() {
        let kv = store();
        let longest = "k".repeat(MAX_KEY_BYTES);
        ok(&kv, "put", &json!({"key": longest, "value": true}).to_string());
        // 128 two-byte characters are 256 bytes: the limit counts bytes, not characters.
        ok(&kv, "put", &json!({"key": "é".repeat(128), "value": true}).to_string());
        for key in [String::new(), "k".repeat(MAX_KEY_BYTES + 1), "é".repeat(129)] {
            for method in ["get", "delete"] {
                let error = err(&kv, method, &json!({ "key": key }).to_string());
                assert_eq!(error.code, ErrorCode::InvalidArgument, "{method} {}", key.len());
            }
            let error = err(&kv, "put", &json!({"key": key, "value": 1}).to_string());
            assert_eq!(error.code, ErrorCode::InvalidArgument);
            assert!(error.message.contains("1 to 256 bytes"), "{}", error.message);
        }
    }

    #[test]
    fn value_limit() {
        let kv = store();
        // A JSON string of n characters serialises to n + 2 bytes (its quotes).
        let largest = "x".repeat(MAX_VALUE_BYTES - 2);
        ok(&kv, "put", &json!({"key": "big", "value": largest}).to_string());
        let too_large = "x".repeat(MAX_VALUE_BYTES - 1);
        let error = err(&kv, "put", &json!({"key": "big", "value": too_large}).to_string());
        assert_eq!(error.code, ErrorCode::ResourceExhausted);
        assert!(error.message.contains("65536"), "{}", error.message);
        // The failed put left the old value in place.
        assert_eq!(
            ok(&kv, "get", r#"{"key":"big"}"#)["value"].as_str().map(str::len),
            Some(MAX_VALUE_BYTES - 2)
        );
    }

    #[test]
    fn key_count_limit() {
        let kv = store();
        for i in 0..MAX_KEYS {
            ok(&kv, "put", &json!({"key": format!("k{i:05}"), "value": i}).to_string());
        }
        let error = err(&kv, "put", r#"{"key":"one-more","value":0}"#);
        assert_eq!(error.code, ErrorCode::ResourceExhausted);
        // Replacing an existing key still works when the store is full...
        assert_eq!(ok(&kv, "put", r#"{"key":"k00000","value":"new"}"#), json!({"previous": 0}));
        // ... and so does adding one after a delete.
        ok(&kv, "delete", r#"{"key":"k00001"}"#);
        ok(&kv, "put", r#"{"key":"one-more","value":0}"#);
    }

    #[test]
    fn bad_requests_say_what_to_send() {
        let kv = store();
        for (method, payload, hint) in [
            ("get", "", r#"{"key": "..."}"#),
            ("get", r#""a""#, r#"{"key": "..."}"#),
            ("get", r#"{"key":1}"#, r#"{"key": "..."}"#),
            ("put", r#"{"key":"a"}"#, "missing field `value`"),
            ("put", r#"{"key":"a","value":1,"ttl":5}"#, "unknown field `ttl`"),
            ("delete", "[]", r#"{"key": "..."}"#),
            ("list", r#"{"prefix":3}"#, r#"{"prefix": "..."}"#),
        ] {
            let error = err(&kv, method, payload);
            assert_eq!(error.code, ErrorCode::InvalidArgument, "{method} {payload}");
            assert!(error.message.contains(hint), "{method} {payload}: {}", error.message);
        }
    }

    #[test]
    fn unknown_method_is_not_found() {
        let error = err(&store(), "increment", r#"{"key":"a"}"#);
        assert_eq!(error, PluginError::unknown_method("increment"));
    }

    #[test]
    fn clear_command_empties_the_store() {
        let kv = store();
        ok(&kv, "put", r#"{"key":"a","value":1}"#);
        ok(&kv, "put", r#"{"key":"b","value":2}"#);
        kv.on_event(event(COMMANDS_TOPIC, "clear", b"")).expect("clear");
        assert_eq!(ok(&kv, "list", "{}"), json!({"keys": []}));

        // Publishers that cannot set the envelope's action may put it in the payload.
        ok(&kv, "put", r#"{"key":"a","value":1}"#);
        kv.on_event(event(COMMANDS_TOPIC, "", br#"{"action":"clear"}"#)).expect("clear");
        assert_eq!(ok(&kv, "list", "{}"), json!({"keys": []}));
    }

    #[test]
    fn other_commands_and_topics_are_refused() {
        let kv = store();
        ok(&kv, "put", r#"{"key":"a","value":1}"#);
        for event in [
            event(COMMANDS_TOPIC, "drop", b""),
            event(COMMANDS_TOPIC, "", b"not json"),
            event("kv.other", "clear", b""),
        ] {
            assert_eq!(kv.on_event(event).unwrap_err().code, ErrorCode::InvalidArgument, "{event:?}");
        }
        assert_eq!(ok(&kv, "list", "{}"), json!({"keys": ["a"]}));
    }

    #[test]
    fn concurrent_puts_are_all_kept() {
        let kv = store();
        std::thread::scope(|scope| {
            for thread in 0..8 {
                let kv = &kv;
                scope.spawn(move || {
                    for i in 0..100 {
                        ok(kv, "put", &json!({"key": format!("t{thread}-{i:03}"), "value": i}).to_string());
                    }
                });
            }
        });
        assert_eq!(ok(&kv, "list", "{}")["keys"].as_array().unwrap().len(), 800);
    }
}

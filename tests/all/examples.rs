//! The example plugins, loaded from their own manifests: what the README promises works.

use std::time::Duration;

use plugbay_core::{Call, Code, Event, Payload, RuntimeKind, State};
use plugbay_testkit::{PluginsDir, compile_c, compile_c_program, workspace_root};
use serde_json::json;

use crate::support::{assert_error, host_over, info, json_call};
use crate::util::wait_for;

#[tokio::test]
async fn c_checksum_example_computes_crc32_and_adler32() {
    let dir = PluginsDir::new();
    let example = workspace_root().join("examples/plugins/c-checksum");
    let folder = dir.write_manifest("c-checksum", std::fs::read(example.join("plugin.toml")).unwrap());
    compile_c(&example.join("checksum.c"), &folder.join("libc_checksum.so"), &["-O2"]);
    let host = host_over(&dir).await;
    let crc = host.invoke(Call::new("checksum@1", "crc32", Payload::bytes(&b"123456789"[..]))).await.unwrap();
    assert_eq!(crc.to_json::<serde_json::Value>().unwrap(), json!({"crc32": "cbf43926"}));
    let adler =
        host.invoke(Call::new("checksum@1", "adler32", Payload::bytes(&b"123456789"[..]))).await.unwrap();
    assert_eq!(adler.to_json::<serde_json::Value>().unwrap(), json!({"adler32": "091e01de"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_rot13_example_is_a_sandboxed_process_plugin_over_the_framed_transport() {
    let dir = PluginsDir::new();
    let example = workspace_root().join("examples/plugins/c-rot13");
    let folder = dir.write_manifest("c-rot13", std::fs::read(example.join("plugin.toml")).unwrap());
    compile_c_program(&example.join("rot13.c"), &folder.join("c-rot13"), &["-O2"]);
    let host = host_over(&dir).await;
    let listed = info(&host, "c-rot13");
    assert_eq!(listed.state, State::Running, "{:?}", listed.error);
    assert_eq!(listed.runtime, Some(RuntimeKind::Process));
    let sandbox = listed.sandbox.expect("a process plugin reports its sandbox");
    assert_eq!(sandbox.layers.len(), 8, "every layer, by default: {sandbox:?}");

    let request = Payload::bytes(&br#""Hello, World!\n caf\u00e9 \\n""#[..]);
    let encoded = host.invoke(Call::new("rot13@1", "encode", request)).await.unwrap();
    // The letters turn; the escapes (\n, \u00e9, \\) stay, so the answer is still JSON.
    assert_eq!(std::str::from_utf8(&encoded.bytes).unwrap(), r#""Uryyb, Jbeyq!\n pns\u00e9 \\a""#);
    assert_eq!(encoded.to_json::<String>().unwrap(), "Uryyb, Jbeyq!\n pns\u{e9} \\a");
    let counted = host.invoke(json_call("rot13@1", "count-letters", json!("abc 123 XYZ"))).await.unwrap();
    assert_eq!(counted.to_json::<serde_json::Value>().unwrap(), json!({"letters": 6}));
    let refused = host.invoke(json_call("rot13@1", "encode", json!({"not": "a string"}))).await.unwrap_err();
    assert_error(&refused, Code::InvalidArgument, &["must be a JSON string"]);
    // The plugin answers on after a refused request.
    let again = host.invoke(json_call("rot13@1", "encode", json!("n"))).await.unwrap();
    assert_eq!(again.to_json::<String>().unwrap(), "a");
}

#[tokio::test]
async fn kv_store_example_keeps_state_publishes_changes_and_obeys_commands() {
    let dir = PluginsDir::new();
    dir.add_rust("kv-store", "kv-store", None);
    let host = host_over(&dir).await;
    let mut events = host.subscribe();
    host.invoke(json_call("kv@1", "put", json!({"key": "a", "value": {"n": 1}}))).await.unwrap();
    host.invoke(json_call("kv@1", "put", json!({"key": "b", "value": 2}))).await.unwrap();
    let got = host.invoke(json_call("kv@1", "get", json!({"key": "a"}))).await.unwrap();
    assert_eq!(got.to_json::<serde_json::Value>().unwrap()["value"], json!({"n": 1}));
    let listed = host.invoke(json_call("kv@1", "list", json!({}))).await.unwrap();
    assert_eq!(listed.to_json::<serde_json::Value>().unwrap()["keys"], json!(["a", "b"]));
    let changed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let event = events.recv().await.unwrap();
            if event.topic == "kv.changed" {
                return event;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(changed.source, "kv-store");
    assert_eq!(changed.action, "put");

    host.publish(Event::new("kv.commands", "clear", Payload::default(), "test")).unwrap();
    let keys = async || {
        let listed = host.invoke(json_call("kv@1", "list", json!({}))).await.unwrap();
        listed.to_json::<serde_json::Value>().unwrap()["keys"].clone()
    };
    let emptied = |keys: &serde_json::Value| *keys == json!([]);
    wait_for(Duration::from_secs(10), "the clear command to empty the store", keys, emptied).await;
}

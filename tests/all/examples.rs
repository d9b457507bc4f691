//! The example plugins, loaded from their own manifests: what the README promises works.

use std::time::Duration;

use plugbay_core::{Call, Event, Payload};
use plugbay_testkit::{PluginsDir, compile_c, workspace_root};
use serde_json::json;

use crate::support::{host_over, json_call};
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

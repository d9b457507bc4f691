//! The native runtime: healthy calls, every refused artifact (A5, B1, B2), the method
//! whitelist, private copies, panics and crashes (C2).

use std::path::Path;

use plugbay_core::{Call, Code, Host, HostConfig, Payload, State, Target};
use plugbay_testkit::{HOST_API_GRANTS, PluginsDir, compile_c, native_manifest, rust_plugin};
use serde_json::json;

use crate::support::{assert_canary_answers, assert_error, assert_failed, host_over, info, json_call};

/// A broken native artifact `bytes` as plugin `name`, beside the canary.
async fn host_with_broken_artifact(name: &str, bytes: &[u8]) -> (PluginsDir, Host) {
    let dir = PluginsDir::new();
    dir.add_canary();
    dir.write_manifest(name, native_manifest(name, "libbroken", &[("broken@1", &["go"])]));
    dir.write_file(name, "libbroken.so", bytes);
    let host = host_over(&dir).await;
    (dir, host)
}

#[tokio::test]
async fn fixture_and_examples_answer_through_every_call_path() {
    let dir = PluginsDir::new();
    dir.add_fixture();
    dir.add_canary();
    let host = host_over(&dir).await;
    assert_eq!(info(&host, "fixture").state, State::Running);

    let echo = host.invoke(Call::new("fixture@1", "echo", Payload::bytes(&b"ping"[..]))).await.unwrap();
    assert_eq!(&echo.bytes[..], b"ping");
    assert_eq!(echo.content_type.as_str(), "application/octet-stream");

    let by_id =
        host.invoke_sync(&Call::new("plugin:text-tools", "lower", Payload::json("ABC").unwrap())).unwrap();
    assert_eq!(by_id.to_json::<String>().unwrap(), "abc");
    assert_eq!(by_id.content_type.as_str(), "application/json");

    let handle = host.resolve(&Target::Capability("fixture@1".into()), "echo").unwrap();
    let length =
        handle.call_borrowed(b"borrowed", "text/plain", |bytes, ct| (bytes.len(), ct.to_owned())).unwrap();
    assert_eq!(length, (8, "text/plain".to_owned()));
    assert_eq!(&handle.call(&Payload::bytes(&b"x"[..])).unwrap().bytes[..], b"x");
}

#[tokio::test]
async fn plugins_call_each_other_through_the_host() {
    let dir = PluginsDir::new();
    dir.add_fixture();
    dir.add_canary();
    let host = host_over(&dir).await;
    let request = json!({"target": "text.transform@1", "method": "reverse", "payload": "abc"});
    let reply = host.invoke(json_call("fixture@1", "invoke", request)).await.unwrap();
    assert_eq!(reply.to_json::<String>().unwrap(), "cba");

    let denied = json!({"target": "text.transform@1", "method": "rm-rf", "payload": "abc"});
    let error = host.invoke(json_call("fixture@1", "invoke", denied)).await.unwrap_err();
    assert_error(&error, Code::PermissionDenied, &["rm-rf", "not listed"]);
}

#[tokio::test]
async fn call_depth_through_the_host_is_bounded() {
    let dir = PluginsDir::new();
    dir.add_fixture();
    let host = host_over(&dir).await;
    let mut request = json!("bottom");
    for _ in 0..20 {
        request = json!({"target": "fixture@1", "method": "invoke", "payload": request});
    }
    let error = host.invoke(json_call("fixture@1", "invoke", request)).await.unwrap_err();
    assert_error(&error, Code::ResourceExhausted, &["max_call_depth"]);
    // The fixture still serves after the refused chain.
    assert!(host.invoke(json_call("fixture@1", "echo", json!(1))).await.is_ok());
}

#[tokio::test]
async fn unlisted_method_is_refused_without_reaching_the_plugin() {
    let dir = PluginsDir::new();
    dir.add_c_fixture("counter", &[]);
    let host = host_over(&dir).await;
    for method in ["secret", "shutdown", ""] {
        let error = host.invoke(Call::new("cfix@1", method, Payload::default())).await.unwrap_err();
        assert_error(&error, Code::PermissionDenied, &["plugin counter", "not listed", "plugin.toml"]);
        let by_id = host.invoke(Call::new("plugin:counter", method, Payload::default())).await.unwrap_err();
        assert_eq!(by_id.code(), Code::PermissionDenied);
    }
    // `count` counts every call that reached the plugin: this is the first.
    let count = host.invoke(Call::new("cfix@1", "count", Payload::default())).await.unwrap();
    assert_eq!(count.to_json::<u64>().unwrap(), 1);
}

#[tokio::test]
async fn capability_calls_rotate_across_providers() {
    let dir = PluginsDir::new();
    dir.add_c_fixture("c-one", &[]);
    dir.add_c_fixture("c-two", &[]);
    let host = host_over(&dir).await;
    let mut counts = Vec::new();
    for _ in 0..4 {
        let reply = host.invoke(Call::new("cfix@1", "count", Payload::default())).await.unwrap();
        counts.push(reply.to_json::<u64>().unwrap());
    }
    assert_eq!(counts, [1, 1, 2, 2], "each provider served every other call");
}

#[tokio::test]
async fn overwriting_the_artifact_does_not_change_the_running_code() {
    let dir = PluginsDir::new();
    let folder = dir.add_c_fixture("counter", &[]);
    let host = host_over(&dir).await;
    std::fs::write(folder.join("libcfix.so"), b"garbage that would crash a mapped library").unwrap();
    let reply = host.invoke(Call::new("cfix@1", "echo", Payload::bytes(&b"still here"[..]))).await.unwrap();
    assert_eq!(&reply.bytes[..], b"still here");
}

#[tokio::test]
async fn c2_panic_becomes_internal_error_and_the_plugin_keeps_serving() {
    let dir = PluginsDir::new();
    dir.add_fixture();
    dir.add_canary();
    let host = host_over(&dir).await;
    let error = host.invoke(Call::new("fixture@1", "panic", Payload::default())).await.unwrap_err();
    assert_error(
        &error,
        Code::Internal,
        &["plugin fixture", "method panic", "panicked", "fixture asked to panic"],
    );
    assert_eq!(
        &host.invoke(Call::new("fixture@1", "echo", Payload::bytes(&b"ok"[..]))).await.unwrap().bytes[..],
        b"ok"
    );
    assert_canary_answers(&host).await;
}

#[test]
fn c2_segfault_kills_the_host_process_as_documented() {
    let dir = PluginsDir::new();
    dir.add_fixture();
    let binary = plugbay_testkit::plugbay_binary();
    let output = std::process::Command::new(binary)
        .args(["call", "fixture@1", "segfault", "--plugins"])
        .arg(dir.path())
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        output.status.signal(),
        Some(11),
        "a native segfault takes its host process down (SIGSEGV): {output:?}"
    );
}

#[tokio::test]
async fn oversized_response_is_resource_exhausted() {
    let dir = PluginsDir::new();
    dir.add_fixture();
    let config = HostConfig::with_plugin_dir(dir.path()).with_max_payload_bytes(1024);
    let host = Host::build(config).unwrap();
    host.load_all().await;
    let ok = host.invoke(json_call("fixture@1", "big", json!(1024))).await.unwrap();
    assert_eq!(ok.len(), 1024);
    let error = host.invoke(json_call("fixture@1", "big", json!(1025))).await.unwrap_err();
    assert_error(&error, Code::ResourceExhausted, &["plugin fixture", "1025 bytes", "max_payload_bytes"]);
}

#[tokio::test]
async fn init_config_reaches_the_plugin_and_init_errors_fail_it() {
    let dir = PluginsDir::new();
    dir.add_fixture();
    let mut config = HostConfig::with_plugin_dir(dir.path());
    config.plugin_config.insert("fixture".into(), b"hello config".to_vec());
    let host = Host::build(config.clone()).unwrap();
    host.load_all().await;
    let reply = host.invoke(Call::new("fixture@1", "config", Payload::default())).await.unwrap();
    assert_eq!(&reply.bytes[..], b"hello config");

    config.plugin_config.insert("fixture".into(), b"fail".to_vec());
    let failing = Host::build(config).unwrap();
    failing.load_all().await;
    // The default restart policy (on-failure) tries again after a backoff; the error stays
    // visible meanwhile and a crash report records it.
    let info = info(&failing, "fixture");
    assert_eq!(info.state, State::BackingOff, "{info:?}");
    let error = info.error.expect("the init error is kept");
    assert_eq!(error.code, Code::FailedPrecondition);
    assert!(error.message.contains("init refused: config says fail"), "{}", error.message);
    let crashes = failing.crashes(Some("fixture"));
    assert_eq!(crashes.len(), 1, "{crashes:?}");
    assert!(crashes[0].reason.contains("init refused"), "{crashes:?}");
    assert!(crashes[0].action.starts_with("restart 1 of 5 in"), "{crashes:?}");
}

// ---- A5: artifacts that are not loadable libraries ----

#[tokio::test]
async fn a5_zero_bytes_is_refused() {
    let (_dir, host) = host_with_broken_artifact("empty", b"").await;
    assert_failed(&host, "empty", Code::FailedPrecondition, &["libbroken.so", "empty"]);
    assert_canary_answers(&host).await;
}

#[tokio::test]
async fn a5_random_bytes_and_text_are_refused() {
    let random: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    for (name, bytes) in [("random", random.as_slice()), ("text", b"this is not a library\n".as_slice())] {
        let (_dir, host) = host_with_broken_artifact(name, bytes).await;
        assert_failed(
            &host,
            name,
            Code::FailedPrecondition,
            &["not a loadable native library", "libbroken.so"],
        );
        assert_canary_answers(&host).await;
    }
}

#[tokio::test]
async fn a5_truncated_elf_is_refused() {
    let library = std::fs::read(rust_plugin("text-tools")).unwrap();
    let (_dir, host) = host_with_broken_artifact("truncated", &library[..8192]).await;
    assert_failed(&host, "truncated", Code::FailedPrecondition, &["not a loadable native library"]);
    assert_canary_answers(&host).await;
}

#[tokio::test]
async fn a5_library_for_another_machine_is_refused() {
    let mut library = std::fs::read(rust_plugin("text-tools")).unwrap();
    // e_machine (offset 18, little-endian u16) := EM_AARCH64 (183).
    library[18..20].copy_from_slice(&183u16.to_le_bytes());
    let (_dir, host) = host_with_broken_artifact("aarch64", &library).await;
    assert_failed(&host, "aarch64", Code::FailedPrecondition, &["not a loadable native library"]);
    assert_canary_answers(&host).await;
}

#[tokio::test]
async fn a5_missing_dependency_is_refused_with_the_loader_message() {
    let dir = PluginsDir::new();
    dir.add_canary();
    let build = tempfile::tempdir().unwrap();
    let dep_source = build.path().join("dep.c");
    std::fs::write(&dep_source, "int plugbay_test_dep(void) { return 1; }\n").unwrap();
    let dep = build.path().join("libplugbaydep.so");
    compile_c(&dep_source, &dep, &[]);
    let folder =
        dir.write_manifest("needy", native_manifest("needy", "libcfix", &[("cfix@1", &["echo", "count"])]));
    let lib_dir = format!("-L{}", build.path().display());
    compile_c(
        &plugbay_testkit::c_fixture_source(),
        &folder.join("libcfix.so"),
        &["-DPLUGIN_ID=\"needy\"", &lib_dir, "-Wl,--no-as-needed", "-lplugbaydep"],
    );
    drop(build); // the dependency is gone now
    let host = host_over(&dir).await;
    assert_failed(&host, "needy", Code::FailedPrecondition, &["libplugbaydep.so"]);
    assert_canary_answers(&host).await;
}

// ---- B1 / B2: contract violations ----

async fn host_with_c_fixture(name: &str, flags: &[&str]) -> (PluginsDir, Host) {
    let dir = PluginsDir::new();
    dir.add_canary();
    dir.add_c_fixture(name, flags);
    let host = host_over(&dir).await;
    (dir, host)
}

#[tokio::test]
async fn b1_library_without_the_entry_symbol_is_refused() {
    let (_dir, host) = host_with_c_fixture("nosym", &["-DENTRY_NAME=plugbay_plugin_v2"]).await;
    assert_failed(&host, "nosym", Code::FailedPrecondition, &["does not export `plugbay_plugin_v1`"]);
    assert_canary_answers(&host).await;
}

#[tokio::test]
async fn b1_other_abi_versions_are_refused() {
    for abi in ["2", "99"] {
        let (_dir, host) = host_with_c_fixture("abi", &[&format!("-DTABLE_ABI={abi}")]).await;
        assert_failed(
            &host,
            "abi",
            Code::FailedPrecondition,
            &[&format!("built for ABI {abi}, this host speaks 1")],
        );
        assert_canary_answers(&host).await;
    }
}

#[tokio::test]
async fn b1_manifest_abi_must_match_the_library() {
    let dir = PluginsDir::new();
    dir.add_canary();
    let folder = dir.add_c_fixture("abi-claim", &[]);
    let manifest = native_manifest("abi-claim", "libcfix", &[("cfix@1", &["echo", "count"])])
        .replace("entry = \"libcfix\"\n", "entry = \"libcfix\"\nabi = 2\n");
    std::fs::write(folder.join("plugin.toml"), manifest).unwrap();
    let host = host_over(&dir).await;
    assert_failed(
        &host,
        "abi-claim",
        Code::FailedPrecondition,
        &["abi = 2", "built for ABI 1", "plugin.abi"],
    );
}

#[tokio::test]
async fn b2_null_function_pointer_is_refused_before_any_call() {
    let (_dir, host) = host_with_c_fixture("nullcall", &["-DNULL_CALL"]).await;
    assert_failed(&host, "nullcall", Code::FailedPrecondition, &["`call` function pointer is NULL"]);
    assert_canary_answers(&host).await;
}

#[tokio::test]
async fn table_from_before_the_optional_fields_loads_and_a_shorter_one_is_refused() {
    // A plugin built against the header before snapshot/restore were appended.
    let (_dir, host) =
        host_with_c_fixture("older", &["-DTABLE_SIZE=offsetof(plugbay_plugin_v1_t, snapshot)"]).await;
    let reply = host.invoke(Call::new("cfix@1", "echo", Payload::bytes(&b"still here"[..]))).await.unwrap();
    assert_eq!(&reply.bytes[..], b"still here");
    host.stop("older").await.unwrap();
    host.start("older").await.unwrap();
    let (_dir, host) = host_with_c_fixture("short", &["-DTABLE_SIZE=40"]).await;
    assert_failed(&host, "short", Code::FailedPrecondition, &["table is 40 bytes, smaller than the"]);
}

#[tokio::test]
async fn b2_bad_descriptions_are_refused() {
    let cases: [(&str, &str, &str); 2] = [
        ("badutf8", "-DDESCRIBE_BAD_UTF8", "not UTF-8"),
        ("huge", "-DDESCRIBE_HUGE", "more than the 1048576 allowed"),
    ];
    for (name, flag, fragment) in cases {
        let (_dir, host) = host_with_c_fixture(name, &[flag]).await;
        assert_failed(&host, name, Code::FailedPrecondition, &[fragment]);
        assert_canary_answers(&host).await;
    }
}

#[tokio::test]
async fn b2_describe_that_disagrees_with_the_manifest_is_refused() {
    let dir = PluginsDir::new();
    dir.add_canary();
    // The C fixture describes `cfix@1 = [echo, count]`; the manifest claims more.
    let folder = dir.add_c_fixture("liar", &[]);
    let manifest = native_manifest("liar", "libcfix", &[("cfix@1", &["echo", "count", "extra"])]);
    std::fs::write(folder.join("plugin.toml"), manifest).unwrap();
    // And one whose describe names another id.
    let other = dir.add_c_fixture("imposter", &[]);
    compile_c(
        &plugbay_testkit::c_fixture_source(),
        &other.join("libcfix.so"),
        &["-DPLUGIN_ID=\"someone-else\""],
    );
    let host = host_over(&dir).await;
    assert_failed(
        &host,
        "liar",
        Code::FailedPrecondition,
        &["describe disagrees with its manifest", "extra"],
    );
    assert_failed(&host, "imposter", Code::FailedPrecondition, &["describe disagrees", "someone-else"]);
    assert_canary_answers(&host).await;
}

#[tokio::test]
async fn b2_unknown_status_code_becomes_internal() {
    let (_dir, host) = host_with_c_fixture("odd", &["-DUNKNOWN_STATUS"]).await;
    let error = host.invoke(Call::new("cfix@1", "echo", Payload::default())).await.unwrap_err();
    assert_error(&error, Code::Internal, &["plugin odd", "unknown status 42"]);
}

#[tokio::test]
async fn calls_into_a_plugin_that_is_not_thread_safe_are_serialised() {
    let dir = PluginsDir::new();
    dir.add_c_fixture("serial", &["-DNOT_THREAD_SAFE"]);
    let host = host_over(&dir).await;
    let handle = host.resolve(&Target::Capability("cfix@1".into()), "count").unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let handle = handle.clone();
            std::thread::spawn(move || {
                for _ in 0..500 {
                    handle.call(&Payload::default()).unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let count = handle.call(&Payload::default()).unwrap();
    assert_eq!(count.to_json::<u64>().unwrap(), 2001, "no increment was lost to a data race");
}

/// The artifact's private copy is made from the bytes read beneath the plugin folder.
#[tokio::test]
async fn a4_artifact_symlink_out_of_the_folder_is_refused() {
    let dir = PluginsDir::new();
    dir.add_canary();
    let folder = dir.write_manifest("linked", native_manifest("linked", "libc", &[("x@1", &["y"])]));
    let libc = ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("libc exists");
    std::os::unix::fs::symlink(libc, folder.join("libc.so")).unwrap();
    let host = host_over(&dir).await;
    assert_failed(&host, "linked", Code::PermissionDenied, &["resolves outside"]);
    assert_canary_answers(&host).await;
}

/// Two plugins that are not thread-safe and both return NULL as their instance: the
/// re-entrancy guard tells them apart (issue 15), and still refuses a plugin calling itself.
#[tokio::test]
async fn issue15_null_instances_that_are_not_thread_safe_call_each_other() {
    let dir = PluginsDir::new();
    for name in ["serial-a", "serial-b"] {
        let folder = dir.add_c_fixture(name, &["-DNOT_THREAD_SAFE", "-DNULL_INSTANCE", "-DRELAY"]);
        let manifest = native_manifest(name, "libcfix", &[("cfix@1", &["echo", "count", "relay"])]);
        std::fs::write(folder.join("plugin.toml"), manifest + HOST_API_GRANTS).unwrap();
    }
    let host = host_over(&dir).await;
    let relay = |request: &'static [u8]| Call::new("plugin:serial-a", "relay", Payload::bytes(request));

    let reply = host.invoke(relay(b"plugin:serial-b echo hello")).await.unwrap();
    assert_eq!(&reply.bytes[..], b"hello", "serial-a reached serial-b through the host");

    let error = host.invoke(relay(b"plugin:serial-a echo hello")).await.unwrap_err();
    assert_error(&error, Code::FailedPrecondition, &["re-entrant call", "not thread-safe"]);
    // Both still serve after the refused call.
    for target in ["plugin:serial-a", "plugin:serial-b"] {
        let echo = host.invoke(Call::new(target, "echo", Payload::bytes(&b"ok"[..]))).await.unwrap();
        assert_eq!(&echo.bytes[..], b"ok", "{target}");
    }
}

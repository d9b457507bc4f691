//! Manifests and folders through the host: every broken one fails alone, with an error that
//! names the plugin, the file, the position or field, and the cause (A1, A2, A4, A7, D2).

use plugbay_core::{Code, Host, HostConfig, State};
use plugbay_testkit::{PluginsDir, native_manifest};
use proptest::prelude::*;

use crate::support::{assert_canary_answers, assert_failed, host_over, info};

#[tokio::test]
async fn a1_missing_empty_non_utf8_and_non_toml_manifests_fail_alone() {
    let dir = PluginsDir::new();
    dir.add_canary();
    dir.folder("missing");
    dir.write_manifest("empty", "");
    dir.write_manifest("binary", b"\xff\xfe[plugin]");
    dir.write_manifest("broken", "[plugin\nid = \"broken\"\n");
    let host = host_over(&dir).await;
    assert_failed(&host, "missing", Code::NotFound, &["missing/plugin.toml"]);
    assert_failed(&host, "empty", Code::InvalidArgument, &["empty/plugin.toml", "empty"]);
    assert_failed(&host, "binary", Code::InvalidArgument, &["binary/plugin.toml:1:1", "UTF-8"]);
    assert_failed(&host, "broken", Code::InvalidArgument, &["broken/plugin.toml:1:"]);
    assert_eq!(info(&host, "text-tools").state, State::Running);
    assert_canary_answers(&host).await;
}

#[tokio::test]
async fn a1_manifest_over_one_mebibyte_is_refused_before_parsing() {
    let dir = PluginsDir::new();
    dir.add_canary();
    let mut big = native_manifest("big", "libbig", &[("x@1", &["y"])]);
    big.push_str(&format!("# {}\n", "x".repeat(1 << 20)));
    dir.write_manifest("big", big);
    let host = host_over(&dir).await;
    assert_failed(&host, "big", Code::InvalidArgument, &["big/plugin.toml", "1048576"]);
    assert_canary_answers(&host).await;
}

#[tokio::test]
async fn a2_bad_fields_name_the_field_and_what_is_allowed() {
    let dir = PluginsDir::new();
    dir.add_canary();
    let base = |id: &str| native_manifest(id, "libx", &[("x@1", &["y"])]);
    dir.write_manifest("unknown", base("unknown").replace("[provides]", "colour = \"red\"\n[provides]"));
    dir.write_manifest(
        "wrongtype",
        base("wrongtype").replace("entry = \"libx\"", "entry = \"libx\"\nabi = \"one\""),
    );
    dir.write_manifest("Log_X", base("Log_X"));
    dir.write_manifest("semver", base("semver").replace("0.1.0", "1.0"));
    dir.write_manifest("jvm", base("jvm").replace("\"native\"", "\"jvm\""));
    dir.write_manifest("renamed", base("someone-else"));
    let host = host_over(&dir).await;
    assert_failed(&host, "unknown", Code::InvalidArgument, &["colour", "plugin.toml:"]);
    assert_failed(&host, "wrongtype", Code::InvalidArgument, &["plugin.abi"]);
    assert_failed(&host, "Log_X", Code::InvalidArgument, &["plugin.id", "a-z"]);
    assert_failed(&host, "semver", Code::InvalidArgument, &["plugin.version", "1.0"]);
    assert_failed(&host, "jvm", Code::InvalidArgument, &["jvm", "native", "wasm", "process"]);
    let renamed = info(&host, "renamed");
    assert_eq!(renamed.state, State::Failed);
    let error = renamed.error.unwrap();
    assert_eq!(error.code, Code::InvalidArgument);
    assert!(
        error.message.contains("someone-else") && error.message.contains("\"renamed\""),
        "{}",
        error.message
    );
    assert_canary_answers(&host).await;
}

#[tokio::test]
async fn a4_entry_that_escapes_the_folder_is_permission_denied() {
    let dir = PluginsDir::new();
    dir.add_canary();
    let base = |id: &str, entry: &str| native_manifest(id, entry, &[("x@1", &["y"])]);
    dir.write_manifest("dotdot", base("dotdot", "../../bin/sh"));
    dir.write_manifest("absolute", base("absolute", "/lib/x86_64-linux-gnu/libc.so.6"));
    let host = host_over(&dir).await;
    assert_failed(&host, "dotdot", Code::PermissionDenied, &["plugin.entry"]);
    assert_failed(&host, "absolute", Code::PermissionDenied, &["plugin.entry"]);
    assert_canary_answers(&host).await;
}

#[tokio::test]
async fn d2_symlinked_folder_and_manifest_out_of_the_tree_are_refused() {
    let dir = PluginsDir::new();
    dir.add_canary();
    std::os::unix::fs::symlink("/etc", dir.path().join("etc")).unwrap();
    let folder = dir.folder("secret");
    std::os::unix::fs::symlink("/etc/passwd", folder.join("plugin.toml")).unwrap();
    let host = host_over(&dir).await;
    assert_failed(
        &host,
        "etc",
        Code::PermissionDenied,
        &["symbolic link to /etc", "outside the plugins folder"],
    );
    assert_failed(&host, "secret", Code::PermissionDenied, &["secret/plugin.toml", "resolves outside"]);
    assert_canary_answers(&host).await;
}

#[tokio::test]
async fn a7_two_folders_with_the_same_id_second_refused_naming_both() {
    let first = PluginsDir::new();
    let second = PluginsDir::new();
    first.add_fixture();
    second.add_fixture();
    let config =
        HostConfig::default().with_plugin_dirs(vec![first.path().to_path_buf(), second.path().to_path_buf()]);
    let host = Host::build(config).unwrap();
    let report = host.load_all().await;
    assert_eq!(report.loaded, ["fixture"]);
    assert_eq!(report.failed.len(), 1);
    let message = report.failed[0].to_string();
    assert!(message.contains(&first.path().join("fixture").display().to_string()), "{message}");
    assert!(message.contains(&second.path().join("fixture").display().to_string()), "{message}");
    assert_eq!(report.failed[0].code(), Code::InvalidArgument);
    let listed: Vec<_> = host.plugins().into_iter().filter(|p| p.id == "fixture").map(|p| p.state).collect();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&State::Running) && listed.contains(&State::Failed));
    assert!(host.invoke(plugbay_core::Call::new("fixture@1", "echo", Default::default())).await.is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A2: a valid manifest with one value replaced by junk never panics the parser and
    /// always fails with a located, coded error.
    #[test]
    fn a2_mutated_manifests_fail_with_located_errors(
        field in prop::sample::select(vec!["id", "version", "runtime", "entry", "abi"]),
        junk in "[ -~]{0,40}",
    ) {
        let valid = native_manifest("mutant", "libx", &[("x@1", &["y"])]);
        let mutated: String = valid
            .lines()
            .map(|line| if line.starts_with(&format!("{field} =")) {
                format!("{field} = {}", toml_literal(&junk))
            } else {
                line.to_owned()
            })
            .collect::<Vec<_>>()
            .join("\n");
        let path = std::path::Path::new("plugins/mutant/plugin.toml");
        if let Err(error) = plugbay_core::Manifest::parse(mutated.as_bytes(), path, Some("mutant")) {
            prop_assert!(matches!(error.code(), Code::InvalidArgument | Code::PermissionDenied), "{error}");
            prop_assert!(error.field().is_some() || error.position().is_some(), "{error}");
            prop_assert!(error.to_string().contains("plugins/mutant/plugin.toml"), "{error}");
        }
    }
}

fn toml_literal(junk: &str) -> String {
    format!("\"{}\"", junk.replace('\\', "\\\\").replace('"', "\\\""))
}

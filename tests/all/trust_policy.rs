//! The trust policy at load (docs/trust.md): under `require` only a folder validly signed by
//! a trusted, unrevoked key whose scope holds the plugin loads, every other one is refused
//! with `permission_denied` naming the plugin, the file and the reason; `warn` loads them
//! and says what it found; a reload is judged again and a badly signed version never
//! replaces the running one.

use std::path::{Path, PathBuf};

use plugbay_core::events::ALERT_TOPIC;
use plugbay_core::trust::{
    KeyId, PrivateKey, SignatureState, TrustConfig, TrustPolicy, TrustedKey, sign_folder,
};
use plugbay_core::{Call, Code, Host, HostConfig, Payload, State};
use plugbay_testkit::PluginsDir;
use plugbay_testkit::wasm::{GUEST_METHODS, write_guest};

use crate::support::{assert_failed, info};

const PROVIDES: &[(&str, &[&str])] = &[("guest.test@1", GUEST_METHODS)];

/// A wasm guest `id` with a data file beside its component.
fn guest(dir: &PluginsDir, id: &str) -> PathBuf {
    let folder = write_guest(dir, id, PROVIDES, "");
    std::fs::write(folder.join("data.txt"), "words\n").unwrap();
    folder
}

fn signed(dir: &PluginsDir, id: &str, key: &PrivateKey) -> PathBuf {
    let folder = guest(dir, id);
    sign_folder(&folder, key, None).unwrap();
    folder
}

fn key(name: &str) -> PrivateKey {
    PrivateKey::generate(name).unwrap()
}

fn append(path: &Path, bytes: &[u8]) {
    let mut all = std::fs::read(path).unwrap();
    all.extend_from_slice(bytes);
    std::fs::write(path, all).unwrap();
}

async fn host_with(dir: &PluginsDir, trust: TrustConfig) -> Host {
    let host = Host::build(HostConfig::with_plugin_dir(dir.path()).with_trust(trust)).unwrap();
    host.load_all().await;
    host
}

#[tokio::test]
async fn d3_under_require_every_bad_or_missing_signature_is_refused_with_its_reason() {
    let (release, stranger, revoked, acme) = (key("release"), key("stranger"), key("old"), key("acme"));
    let dir = PluginsDir::new();
    signed(&dir, "good", &release);
    let flipped = signed(&dir, "bit-flip", &release);
    let mut wasm = std::fs::read(flipped.join("plugin.wasm")).unwrap();
    let middle = wasm.len() / 2;
    wasm[middle] ^= 0x10;
    std::fs::write(flipped.join("plugin.wasm"), wasm).unwrap();
    append(&signed(&dir, "appended", &release).join("plugin.wasm"), b"\0evil");
    append(&signed(&dir, "manifest-edited", &release).join("plugin.toml"), b"\n[labels]\nzone = \"x\"\n");
    std::fs::write(signed(&dir, "file-added", &release).join("extra.txt"), "x").unwrap();
    std::fs::remove_file(signed(&dir, "file-removed", &release).join("data.txt")).unwrap();
    signed(&dir, "unknown-key", &stranger);
    signed(&dir, "revoked-key", &revoked);
    signed(&dir, "out-of-scope", &acme);
    signed(&dir, "acme-tool", &acme);
    guest(&dir, "unsigned");
    guest(&dir, "dev-tool");
    let trust = TrustConfig::with_policy(TrustPolicy::Require)
        .with_key(TrustedKey::new(release.public()))
        .with_key(TrustedKey::new(revoked.public()))
        .with_key(TrustedKey::new(acme.public()).with_scope(vec!["acme-*".into()]))
        .with_revoked(vec![revoked.public().id])
        // The allow-list admits the unsigned, never a bad signature.
        .with_allow_unsigned(vec!["dev-tool".into(), "file-added".into()]);
    let host = host_with(&dir, trust).await;

    let refused: [(&str, &str, &str); 9] = [
        ("bit-flip", "plugin.wasm", "plugin.wasm: changed since it was signed"),
        ("appended", "plugin.wasm", "plugin.wasm: changed since it was signed"),
        ("manifest-edited", "plugin.toml", "plugin.toml: changed since it was signed"),
        ("file-added", "extra.txt", "extra.txt: added after the folder was signed"),
        ("file-removed", "data.txt", "data.txt: signed, but no longer in the folder"),
        ("unknown-key", "plugin.sig", "which is not in this host's trust store"),
        ("revoked-key", "plugin.sig", "which is revoked"),
        ("out-of-scope", "plugin.sig", "which may sign only acme-* and not out-of-scope"),
        ("unsigned", "plugin.sig", "the plugin is not signed and trust.policy is require"),
    ];
    for (id, file, reason) in refused {
        let path = dir.path().join(id).join(file);
        assert_failed(&host, id, Code::PermissionDenied, &[&path.display().to_string(), reason]);
    }
    for id in ["good", "acme-tool"] {
        let good = info(&host, id);
        assert_eq!(good.state, State::Running, "{good:?}");
        let signature = good.signature.expect("a loaded plugin's signature is shown");
        assert_eq!(signature.state, SignatureState::Valid, "{signature:?}");
        let signer = if id == "good" { "release" } else { "acme" };
        assert_eq!(signature.signer.as_deref(), Some(signer));
    }
    let dev = info(&host, "dev-tool");
    assert_eq!(dev.state, State::Running, "{dev:?}");
    let signature = dev.signature.unwrap();
    assert_eq!(signature.state, SignatureState::Unsigned);
    assert!(signature.summary().contains("admitted unsigned by trust.allow_unsigned"), "{signature:?}");
    let reply = host.invoke(Call::new("guest.test@1", "echo", Payload::bytes(&b"hi"[..]))).await.unwrap();
    assert_eq!(&reply.bytes[..], b"hi", "the good plugins serve beside the refused ones");
}

#[tokio::test]
async fn warn_loads_every_plugin_with_what_it_found_and_off_reads_nothing() {
    let dir = PluginsDir::new();
    signed(&dir, "signed-by-stranger", &key("stranger"));
    append(&signed(&dir, "tampered", &key("stranger")).join("data.txt"), b"more");
    guest(&dir, "unsigned");
    // The default policy, with a trust store that knows none of the signers.
    let trust = TrustConfig::default().with_key(TrustedKey::new(key("release").public()));
    let host = Host::build(HostConfig::with_plugin_dir(dir.path()).with_trust(trust)).unwrap();
    let mut alerts = host.subscribe();
    host.load_all().await;
    let found = |host: &Host, id: &str| {
        let plugin = info(host, id);
        assert_eq!(plugin.state, State::Running, "{plugin:?}");
        plugin.signature.unwrap()
    };
    let stranger = found(&host, "signed-by-stranger");
    assert_eq!(stranger.state, SignatureState::Invalid);
    assert!(stranger.summary().contains("not in this host's trust store"), "{stranger:?}");
    let tampered = found(&host, "tampered");
    assert_eq!((tampered.state, tampered.file.as_deref()), (SignatureState::Invalid, Some("data.txt")));
    assert_eq!(found(&host, "unsigned").state, SignatureState::Unsigned);
    let mut warned = Vec::new();
    while let Ok(event) = alerts.try_recv() {
        if event.topic == ALERT_TOPIC && event.action == "signature_warning" {
            let alert: serde_json::Value = event.payload.to_json().unwrap();
            warned.push(alert["plugin"].as_str().unwrap().to_owned());
        }
    }
    warned.sort();
    assert_eq!(warned, ["signed-by-stranger", "tampered", "unsigned"]);

    let off = host_with(&dir, TrustConfig::with_policy(TrustPolicy::Off)).await;
    assert_eq!(found(&off, "tampered").state, SignatureState::Unchecked);

    // With no trust store at all the findings are shown but not alerted: every plugin
    // would be one.
    let quiet = Host::build(HostConfig::with_plugin_dir(dir.path())).unwrap();
    let mut alerts = quiet.subscribe();
    quiet.load_all().await;
    assert_eq!(found(&quiet, "unsigned").state, SignatureState::Unsigned);
    while let Ok(event) = alerts.try_recv() {
        assert_ne!(event.action, "signature_warning", "{event:?}");
    }
}

#[tokio::test]
async fn a_reload_is_judged_again_and_a_badly_signed_version_keeps_the_old_one_serving() {
    let release = key("release");
    let dir = PluginsDir::new();
    let folder = signed(&dir, "good", &release);
    let trust = TrustConfig::with_policy(TrustPolicy::Require).with_key(TrustedKey::new(release.public()));
    let host = host_with(&dir, trust).await;
    assert_eq!(info(&host, "good").state, State::Running);

    // The manifest edited and not signed again: refused, the running version serves on.
    append(&folder.join("plugin.toml"), b"\n[labels]\nzone = \"b\"\n");
    let error = host.reload("good").await.unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied, "{error}");
    assert!(error.to_string().contains("plugin.toml: changed since it was signed"), "{error}");
    let kept = info(&host, "good");
    assert_eq!(kept.state, State::Running, "{kept:?}");
    assert!(kept.reload_error.is_some(), "{kept:?}");
    let reply = host.invoke(Call::new("guest.test@1", "echo", Payload::bytes(&b"on"[..]))).await.unwrap();
    assert_eq!(&reply.bytes[..], b"on");

    // Signed by a key this host does not know: still refused. Signed properly: switched.
    sign_folder(&folder, &key("intruder"), None).unwrap();
    let error = host.reload("good").await.unwrap_err();
    assert!(error.to_string().contains("not in this host's trust store"), "{error}");
    sign_folder(&folder, &release, None).unwrap();
    host.reload("good").await.unwrap();
    let switched = info(&host, "good");
    assert_eq!(switched.reload_error, None, "{switched:?}");
    assert_eq!(switched.signature.unwrap().key_id, Some(release.public().id));
}

#[test]
fn revoked_ids_are_compared_without_regard_to_case() {
    let release = key("release");
    let upper = KeyId(release.public().id.0.to_ascii_uppercase());
    let trust = TrustConfig::with_policy(TrustPolicy::Require)
        .with_key(TrustedKey::new(release.public()))
        .with_revoked(vec![upper]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = PluginsDir::new();
    signed(&dir, "good", &release);
    let host = runtime.block_on(host_with(&dir, trust));
    assert_failed(&host, "good", Code::PermissionDenied, &["which is revoked"]);
}

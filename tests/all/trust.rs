//! Signed plugin folders (docs/trust.md): keys, `plugbay sign`, `plugbay verify`, every kind
//! of change named, and the format checked against an independent Python implementation
//! (`scripts/plugin_sig.py`, which needs python3's `cryptography`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use plugbay_testkit::{PluginsDir, plugbay_binary, workspace_root};
use serde_json::Value;

fn plugbay(args: &[&str]) -> Output {
    Command::new(plugbay_binary()).args(args).env_remove("RUST_LOG").output().expect("plugbay runs")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// A plugin folder of three files (a manifest, a program, a file in a subfolder) and a key
/// pair beside it.
fn signable() -> (PluginsDir, PathBuf, PathBuf) {
    let dir = PluginsDir::new();
    let folder = dir.write_manifest(
        "signed",
        "[plugin]\nid = \"signed\"\nversion = \"1.2.0\"\nruntime = \"process\"\nentry = \"run.sh\"\n",
    );
    std::fs::write(folder.join("run.sh"), "#!/bin/sh\necho hello\n").unwrap();
    std::fs::create_dir(folder.join("data")).unwrap();
    std::fs::write(folder.join("data/words.txt"), "a b c\n").unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let made = plugbay(&["key", "new", "release", "--dir", keys.to_str().unwrap()]);
    assert!(made.status.success(), "{}", text(&made));
    (dir, folder, keys)
}

fn verify_json(folder: &Path, extra: &[&str]) -> (bool, Value) {
    let output = plugbay(&[&["verify", folder.to_str().unwrap(), "--json"], extra].concat());
    let report: Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("{}", text(&output)));
    (output.status.success(), report)
}

fn sign(folder: &Path, key: &Path) {
    let signed = plugbay(&["sign", folder.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    assert!(signed.status.success(), "{}", text(&signed));
    assert!(text(&signed).contains("signed signed 1.2.0 with key release"), "{}", text(&signed));
}

#[test]
fn key_new_writes_a_0600_private_key_and_never_replaces_one() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, _folder, keys) = signable();
    let private = keys.join("release.key");
    assert_eq!(std::fs::metadata(&private).unwrap().permissions().mode() & 0o777, 0o600);
    let before = std::fs::read(&private).unwrap();
    let again = plugbay(&["key", "new", "release", "--dir", keys.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(text(&again).contains("refusing to replace an existing key file"), "{}", text(&again));
    assert_eq!(std::fs::read(&private).unwrap(), before);
}

#[test]
fn d3_every_change_to_a_signed_folder_is_named_and_an_untouched_one_is_valid() {
    let (_dir, folder, keys) = signable();
    sign(&folder, &keys.join("release.key"));
    let (valid, report) = verify_json(&folder, &["--key", keys.join("release.pub").to_str().unwrap()]);
    assert!(valid, "{report}");
    assert_eq!(report["files"], 3, "plugin.toml, run.sh, data/words.txt: {report}");
    assert_eq!(report["key_name"], "release");
    let human = plugbay(&["verify", folder.to_str().unwrap()]);
    assert!(
        human.status.success() && text(&human).starts_with("valid: signed 1.2.0, 3 files"),
        "{}",
        text(&human)
    );

    // Each mutation on a fresh copy of the signed folder: (what, change, expected problem kind, path).
    type Mutation = fn(&Path);
    let mutations: [(&str, Mutation, &str, &str); 7] = [
        ("bit flip in the program", |f| flip_bit(&f.join("run.sh")), "changed", "run.sh"),
        ("bytes appended", |f| append(&f.join("data/words.txt"), b"d"), "changed", "data/words.txt"),
        (
            "manifest edited",
            |f| append(&f.join("plugin.toml"), b"\n[labels]\nx = \"y\"\n"),
            "changed",
            "plugin.toml",
        ),
        ("a file added", |f| std::fs::write(f.join("data/extra"), "x").unwrap(), "added", "data/extra"),
        (
            "a file removed",
            |f| std::fs::remove_file(f.join("data/words.txt")).unwrap(),
            "removed",
            "data/words.txt",
        ),
        (
            "a symbolic link added",
            |f| std::os::unix::fs::symlink("/etc/shadow", f.join("shadow")).unwrap(),
            "uncoverable",
            "shadow",
        ),
        (
            "the signed statement edited",
            |f| edit_signature(f, |sig| sig["created"] = 1.into()),
            "bad_signature",
            "",
        ),
    ];
    for (what, mutate, kind, path) in mutations {
        let copy = folder.with_file_name(format!("mutated-{}", what.replace(' ', "-")));
        copy_folder(&folder, &copy);
        mutate(&copy);
        let (valid, report) = verify_json(&copy, &[]);
        assert!(!valid, "{what}: {report}");
        let problems = report["problems"].as_array().unwrap();
        assert_eq!(problems.len(), 1, "{what}: exactly one problem: {report}");
        assert_eq!(problems[0]["problem"], kind, "{what}: {report}");
        if !path.is_empty() {
            assert_eq!(problems[0]["path"], path, "{what}: {report}");
        }
        assert!(problems[0]["message"].as_str().unwrap().contains(if path.is_empty() {
            "plugin.sig"
        } else {
            path
        }));
    }
    let (valid, _) = verify_json(&folder, &[]);
    assert!(valid, "the good folder beside them is still valid");
}

#[test]
fn a_signature_by_another_key_or_for_another_version_is_not_valid() {
    let (_dir, folder, keys) = signable();
    let other = plugbay(&["key", "new", "other", "--dir", keys.to_str().unwrap()]);
    assert!(other.status.success());
    sign(&folder, &keys.join("release.key"));
    let (valid, report) = verify_json(&folder, &["--key", keys.join("other.pub").to_str().unwrap()]);
    assert!(!valid, "{report}");
    assert_eq!(report["problems"][0]["problem"], "other_key", "{report}");

    // A key swapped in: the other key's id and public key, the old signature.
    let other_pub = std::fs::read_to_string(keys.join("other.pub")).unwrap();
    let other_hex = other_pub.split(' ').nth(1).unwrap().to_owned();
    edit_signature(&folder, |sig| sig["public_key"] = other_hex.clone().into());
    let (valid, report) = verify_json(&folder, &[]);
    assert!(!valid && report["problems"][0]["problem"] == "bad_signature", "{report}");

    // plugin.toml now says 1.3.0: both the file and the version differ from what was signed.
    sign(&folder, &keys.join("release.key"));
    let manifest = std::fs::read_to_string(folder.join("plugin.toml")).unwrap().replace("1.2.0", "1.3.0");
    std::fs::write(folder.join("plugin.toml"), manifest).unwrap();
    let (valid, report) = verify_json(&folder, &[]);
    let kinds: Vec<&str> =
        report["problems"].as_array().unwrap().iter().map(|p| p["problem"].as_str().unwrap()).collect();
    assert!(!valid && kinds == ["other_plugin", "changed"], "{report}");

    // Unsigned and broken signature files are failed verifications, not crashes.
    std::fs::write(folder.join("plugin.sig"), "{not json").unwrap();
    let (valid, report) = verify_json(&folder, &[]);
    assert!(!valid && report["error"].as_str().unwrap().contains("not a plugbay signature file"), "{report}");
    std::fs::remove_file(folder.join("plugin.sig")).unwrap();
    let (valid, report) = verify_json(&folder, &[]);
    assert!(!valid && report["error"].as_str().unwrap().contains("has no plugin.sig"), "{report}");
}

#[test]
fn an_expired_signature_is_not_valid() {
    let (_dir, folder, keys) = signable();
    let script = workspace_root().join("scripts/plugin_sig.py");
    let signed = Command::new("python3")
        .arg(&script)
        .args(["sign", folder.to_str().unwrap(), "--key", keys.join("release.key").to_str().unwrap()])
        .args(["--expires", "1000"])
        .output()
        .unwrap();
    assert!(signed.status.success(), "{}", text(&signed));
    let (valid, report) = verify_json(&folder, &[]);
    assert!(!valid && report["problems"][0]["problem"] == "expired", "{report}");
}

#[test]
fn the_documented_format_is_enough_for_a_python_implementation_both_ways() {
    let (_dir, folder, keys) = signable();
    let script = workspace_root().join("scripts/plugin_sig.py");
    let python = |args: &[&str]| {
        Command::new("python3")
            .arg(&script)
            .args(args)
            .output()
            .unwrap_or_else(|error| panic!("python3 runs: {error}"))
    };
    let folder_arg = folder.to_str().unwrap();

    // plugbay signs, Python checks.
    sign(&folder, &keys.join("release.key"));
    let checked = python(&["verify", folder_arg]);
    assert!(checked.status.success(), "{}", text(&checked));
    let (_, ours) = verify_json(&folder, &[]);
    let theirs: Value = serde_json::from_slice(&checked.stdout).unwrap();
    assert_eq!(theirs["key_id"], ours["key_id"]);
    flip_bit(&folder.join("run.sh"));
    let checked = python(&["verify", folder_arg]);
    assert_eq!(checked.status.code(), Some(1), "{}", text(&checked));
    assert!(text(&checked).contains("run.sh: changed"), "{}", text(&checked));
    flip_bit(&folder.join("run.sh"));

    // Python signs, plugbay checks.
    let signed = python(&["sign", folder_arg, "--key", keys.join("release.key").to_str().unwrap()]);
    assert!(signed.status.success(), "{}", text(&signed));
    let (valid, report) = verify_json(&folder, &["--key", keys.join("release.pub").to_str().unwrap()]);
    assert!(valid, "{report}");
    append(&folder.join("plugin.toml"), b"# edited\n");
    let (valid, report) = verify_json(&folder, &[]);
    assert!(!valid && report["problems"][0]["path"] == "plugin.toml", "{report}");
}

fn flip_bit(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[3] ^= 0x01;
    std::fs::write(file, bytes).unwrap();
}

fn append(file: &Path, more: &[u8]) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes.extend_from_slice(more);
    std::fs::write(file, bytes).unwrap();
}

fn edit_signature(folder: &Path, edit: impl FnOnce(&mut Value)) {
    let path = folder.join("plugin.sig");
    let mut sig: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut sig);
    std::fs::write(&path, serde_json::to_vec_pretty(&sig).unwrap()).unwrap();
}

fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_folder(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

//! Tests of manifest parsing and validation.
use super::context::{Seg, field_name};
use super::*;

const PATH: &str = "plugins/log-processor/plugin.toml";

const FULL: &str = r#"
[plugin]
id = "log-processor"            # [a-z0-9-], unique per host
version = "1.2.0"               # semver
runtime = "native"              # native | wasm | process
entry = "liblog_processor"
abi = 1
[provides]
"log.parse@1" = ["parse", "parse_batch"]
[subscribes]
topics = ["events.log"]
[labels]
region = "eu"
[limits]
timeout_ms = 3000
max_concurrency = 64
memory_mb = 512
cpu_percent = 50
pids = 64
[permissions]
read = ["./data"]
write = []
network = false
env = ["TZ"]
invoke = ["kv@1", "text.transform@1/upper", "plugin:kv-store/get"]
publish = ["events.*"]
[restart]
policy = "on-failure"
max_restarts = 5
window_s = 60
[load]
lazy = false
"#;

const MINIMAL: &str = r#"
[plugin]
id = "log-processor"
version = "1.2.0"
runtime = "native"
entry = "liblog_processor"
"#;

fn parse(text: &str) -> Result<Manifest> {
    Manifest::parse(text.as_bytes(), Path::new(PATH), None)
}

/// `MINIMAL` with `line` replacing the line that starts with the same key, or appended.
fn minimal_with(line: &str) -> String {
    let key = line.split('=').next().unwrap_or_default().trim();
    if MINIMAL.lines().any(|existing| existing.split('=').next().unwrap_or_default().trim() == key) {
        MINIMAL
            .lines()
            .map(
                |existing| {
                    if existing.split('=').next().unwrap_or_default().trim() == key { line } else { existing }
                },
            )
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        format!("{MINIMAL}{line}\n")
    }
}

#[track_caller]
fn expect_error(text: &str, code: Code, field: Option<&str>, position: bool, fragment: &str) -> Error {
    let error = match parse(text) {
        Ok(manifest) => panic!("accepted: {manifest:?}\n{text}"),
        Err(error) => error,
    };
    assert_eq!(error.code(), code, "{error}");
    assert_eq!(error.field(), field, "{error}");
    assert_eq!(error.position().is_some(), position, "{error}");
    assert_eq!(error.file(), Some(Path::new(PATH)), "{error}");
    assert!(error.message().contains(fragment), "{fragment:?} not in {error}");
    error
}

#[test]
fn full_manifest_parses_to_the_expected_values() {
    let manifest = parse(FULL).unwrap();
    let expected = Manifest {
        plugin: PluginSection {
            id: "log-processor".into(),
            version: semver::Version::new(1, 2, 0),
            runtime: RuntimeKind::Native,
            entry: "liblog_processor".into(),
            abi: 1,
        },
        provides: BTreeMap::from([("log.parse@1".into(), vec!["parse".into(), "parse_batch".into()])]),
        subscribes: Subscribes { topics: vec!["events.log".into()] },
        labels: BTreeMap::from([("region".into(), "eu".into())]),
        limits: Limits {
            timeout_ms: Some(3000),
            max_concurrency: Some(64),
            memory_mb: Some(512),
            cpu_percent: Some(50),
            pids: Some(64),
        },
        permissions: Permissions {
            read: vec!["./data".into()],
            write: vec![],
            network: false,
            env: vec!["TZ".into()],
            syscalls: vec![],
            invoke: vec!["kv@1".into(), "text.transform@1/upper".into(), "plugin:kv-store/get".into()],
            publish: vec!["events.*".into()],
        },
        restart: Restart::default(),
        health: Health::default(),
        retry: Retry::default(),
        load: Load::default(),
        process: ProcessSettings::default(),
        wasm: WasmSettings::default(),
    };
    assert_eq!(manifest, expected);
    assert_eq!(manifest.methods_of("log.parse@1"), Some(&["parse".to_owned(), "parse_batch".to_owned()][..]));
    assert_eq!(manifest.methods_of("log.parse@2"), None);
}

#[test]
fn minimal_manifest_takes_the_defaults() {
    let manifest = parse(MINIMAL).unwrap();
    assert_eq!(manifest.plugin.abi, 1);
    assert!(manifest.provides.is_empty());
    assert_eq!(manifest.subscribes, Subscribes::default());
    assert!(manifest.labels.is_empty());
    assert_eq!(manifest.limits, Limits::default());
    assert_eq!(manifest.permissions, Permissions::default());
    assert_eq!(
        manifest.restart,
        Restart {
            policy: RestartPolicy::OnFailure,
            max_restarts: 5,
            window_s: 60,
            backoff_ms: 100,
            backoff_max_ms: 30_000,
            snapshot_interval_ms: 0
        }
    );
    assert_eq!(manifest.health, Health { interval_ms: 5_000, timeout_ms: 1_000, failures: 3 });
    assert!(manifest.retry.idempotent.is_empty());
    assert_eq!(manifest.load, Load::default());
    assert_eq!(
        manifest.process,
        ProcessSettings {
            replicas: 1,
            start_timeout_ms: 10_000,
            shutdown_grace_ms: 5_000,
            args: vec![],
            transport: ProcessTransport::Auto
        }
    );
}

#[test]
fn health_retry_and_backoff_are_read_and_checked() {
    let text = format!(
        "{MINIMAL}[provides]\n\"fixture@1\" = [\"echo\", \"get\"]\n[restart]\nbackoff_ms = 0\nbackoff_max_ms = 50\n\
         [health]\ninterval_ms = 0\ntimeout_ms = 20\nfailures = 2\n[retry]\nidempotent = [\"get\"]\n"
    );
    let manifest = parse(&text).unwrap();
    assert_eq!((manifest.restart.backoff_ms, manifest.restart.backoff_max_ms), (0, 50));
    assert_eq!(manifest.health, Health { interval_ms: 0, timeout_ms: 20, failures: 2 });
    assert_eq!(manifest.retry.idempotent, ["get"]);
    expect_error(
        &format!("{MINIMAL}[provides]\n\"fixture@1\" = [\"echo\"]\n[retry]\nidempotent = [\"put\"]\n"),
        Code::InvalidArgument,
        Some("retry.idempotent[0]"),
        true,
        "method \"put\" is not listed in [provides]",
    );
    expect_error(
        &format!("{MINIMAL}[health]\ninterval_ms = 5\n"),
        Code::InvalidArgument,
        Some("health.interval_ms"),
        true,
        "5 is out of range; allowed: 0 (no checks) or 10 to 3600000",
    );
    expect_error(
        &format!("{MINIMAL}[health]\nfailures = 0\n"),
        Code::InvalidArgument,
        Some("health.failures"),
        true,
        "1 to 100",
    );
    expect_error(
        &format!("{MINIMAL}[restart]\nbackoff_ms = -1\n"),
        Code::InvalidArgument,
        Some("restart.backoff_ms"),
        true,
        "0 to 600000",
    );
    expect_error(
        &format!("{MINIMAL}[health]\nperiod = 1\n"),
        Code::InvalidArgument,
        Some("health.period"),
        true,
        "period",
    );
}

#[test]
fn process_settings_are_read_and_checked() {
    let text = format!(
        "{MINIMAL}[process]\nreplicas = 3\nstart_timeout_ms = 500\nshutdown_grace_ms = 0\nargs = [\"--fast\"]\n"
    );
    let manifest = parse(&text).unwrap();
    assert_eq!(
        manifest.process,
        ProcessSettings {
            replicas: 3,
            start_timeout_ms: 500,
            shutdown_grace_ms: 0,
            args: vec!["--fast".into()],
            transport: ProcessTransport::Auto
        }
    );
    expect_error(
        &format!("{MINIMAL}[process]\nreplicas = 0\n"),
        Code::InvalidArgument,
        Some("process.replicas"),
        true,
        "1 to 64",
    );
    expect_error(
        &format!("{MINIMAL}[process]\nreplicas = 65\n"),
        Code::InvalidArgument,
        Some("process.replicas"),
        true,
        "1 to 64",
    );
    expect_error(
        &format!("{MINIMAL}[process]\nport = 1\n"),
        Code::InvalidArgument,
        Some("process.port"),
        true,
        "port",
    );
}

#[test]
fn wasm_instance_mode_is_read_and_checked() {
    assert_eq!(parse(MINIMAL).unwrap().wasm.instance, WasmInstanceMode::Persistent);
    let per_call = parse(&format!("{MINIMAL}[wasm]\ninstance = \"per-call\"\n")).unwrap();
    assert_eq!(per_call.wasm.instance, WasmInstanceMode::PerCall);
    let persistent = parse(&format!("{MINIMAL}[wasm]\ninstance = \"persistent\"\n")).unwrap();
    assert_eq!(persistent.wasm.instance, WasmInstanceMode::Persistent);
    expect_error(
        &format!("{MINIMAL}[wasm]\ninstance = \"pooled\"\n"),
        Code::InvalidArgument,
        Some("wasm.instance"),
        true,
        "persistent, per-call",
    );
    expect_error(
        &format!("{MINIMAL}[wasm]\nfuel = 1\n"),
        Code::InvalidArgument,
        Some("wasm.fuel"),
        true,
        "fuel",
    );
}

#[test]
fn every_runtime_and_policy_is_accepted() {
    for kind in RuntimeKind::ALL {
        let manifest = parse(&minimal_with(&format!("runtime = \"{kind}\""))).unwrap();
        assert_eq!(manifest.plugin.runtime, kind);
    }
    for policy in [RestartPolicy::Never, RestartPolicy::OnFailure, RestartPolicy::Always] {
        let manifest = parse(&format!("{MINIMAL}[restart]\npolicy = \"{policy}\"\n")).unwrap();
        assert_eq!(manifest.restart.policy, policy);
    }
}

#[test]
fn serialises_in_manifest_spelling_and_round_trips() {
    let manifest = parse(FULL).unwrap();
    let json = serde_json::to_value(&manifest).unwrap();
    assert_eq!(json["plugin"]["version"], "1.2.0");
    assert_eq!(json["plugin"]["runtime"], "native");
    assert_eq!(json["restart"]["policy"], "on-failure");
    let text = toml::to_string(&manifest).unwrap();
    assert_eq!(parse(&text).unwrap(), manifest);
}

#[test]
fn folder_name_must_equal_the_id() {
    let path = Path::new(PATH);
    assert!(Manifest::parse(MINIMAL.as_bytes(), path, Some("log-processor")).is_ok());
    let error = Manifest::parse(MINIMAL.as_bytes(), path, Some("other")).unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(error.field(), Some("plugin.id"));
    assert_eq!(error.position(), Some((3, 6)));
    assert!(
        error.message().contains("\"log-processor\"") && error.message().contains("\"other\""),
        "{error}"
    );
    assert_eq!(error.plugin(), Some("log-processor"));
}

#[test]
fn bad_ids_are_refused_at_their_position() {
    let error =
        expect_error(&minimal_with("id = \"Log_X\""), Code::InvalidArgument, Some("plugin.id"), true, "a-z");
    assert_eq!(error.position(), Some((3, 6)));
    assert_eq!(error.plugin(), Some("Log_X"));
    assert!(
        error
            .to_string()
            .starts_with("invalid_argument: plugin Log_X: plugins/log-processor/plugin.toml:3:6")
    );
    let long = "a".repeat(300);
    let error = expect_error(
        &minimal_with(&format!("id = \"{long}\"")),
        Code::InvalidArgument,
        Some("plugin.id"),
        true,
        "1 to 64",
    );
    assert!(error.message().len() < 400, "the message quotes a shortened id: {error}");
    for id in ["", "-log", "log-", "log.x", "ünï"] {
        expect_error(
            &minimal_with(&format!("id = \"{id}\"")),
            Code::InvalidArgument,
            Some("plugin.id"),
            true,
            "not allowed",
        );
    }
    let id64 = "a".repeat(64);
    assert!(parse(&minimal_with(&format!("id = \"{id64}\""))).is_ok());
}

#[test]
fn bad_version_is_quoted_with_an_example() {
    let error = expect_error(
        &minimal_with("version = \"1.0\""),
        Code::InvalidArgument,
        Some("plugin.version"),
        true,
        "\"1.0\"",
    );
    assert!(error.message().contains("\"1.2.0\""), "{error}");
    assert_eq!(error.position(), Some((4, 11)));
    expect_error(
        &minimal_with("version = 1.0"),
        Code::InvalidArgument,
        Some("plugin.version"),
        true,
        "expected a string",
    );
}

#[test]
fn unknown_runtime_lists_the_known_ones() {
    let error = expect_error(
        &minimal_with("runtime = \"jvm\""),
        Code::InvalidArgument,
        Some("plugin.runtime"),
        true,
        "\"jvm\"",
    );
    for kind in ["native", "wasm", "process"] {
        assert!(error.message().contains(kind), "{error}");
    }
}

#[test]
fn escaping_entries_are_permission_denied() {
    for entry in ["../../bin/sh", "/lib/x.so", "C:/x.dll", "c:x", "lib/../../x", "..\\\\x", "\\\\server\\\\x"]
    {
        expect_error(
            &minimal_with(&format!("entry = \"{entry}\"")),
            Code::PermissionDenied,
            Some("plugin.entry"),
            true,
            "escape",
        );
    }
}

#[test]
fn malformed_entries_are_invalid() {
    let cases = [
        ("\"\"", "empty"),
        ("\"lib\\u0000x\"", "NUL"),
        ("\"lib\\\\x.dll\"", "backslash"),
        ("\"lib\\nx\"", "control"),
    ];
    for (entry, fragment) in cases {
        expect_error(
            &minimal_with(&format!("entry = {entry}")),
            Code::InvalidArgument,
            Some("plugin.entry"),
            true,
            fragment,
        );
    }
    let long = "a".repeat(256);
    expect_error(
        &minimal_with(&format!("entry = \"{long}\"")),
        Code::InvalidArgument,
        Some("plugin.entry"),
        true,
        "limit is 255",
    );
    assert!(parse(&minimal_with(&format!("entry = \"{}\"", "a".repeat(255)))).is_ok());
    assert!(parse(&minimal_with("entry = \"./bin/x..y\"")).is_ok());
}

#[test]
fn missing_required_fields_are_named() {
    for name in ["id", "version", "runtime", "entry"] {
        let text: String =
            MINIMAL.lines().filter(|line| !line.starts_with(name)).map(|line| format!("{line}\n")).collect();
        let error =
            expect_error(&text, Code::InvalidArgument, Some(&format!("plugin.{name}")), true, "missing");
        assert_eq!(error.position(), Some((2, 1)), "points at the [plugin] table: {error}");
    }
    expect_error("[provides]\n", Code::InvalidArgument, Some("plugin"), false, "[plugin] table is missing");
}

#[test]
fn abi_must_be_a_positive_u32() {
    expect_error(
        &minimal_with("abi = 0"),
        Code::InvalidArgument,
        Some("plugin.abi"),
        true,
        "1 to 4294967295",
    );
    expect_error(
        &minimal_with("abi = 4294967296"),
        Code::InvalidArgument,
        Some("plugin.abi"),
        true,
        "out of range",
    );
    expect_error(&minimal_with("abi = -1"), Code::InvalidArgument, Some("plugin.abi"), true, "out of range");
    let error = expect_error(
        &minimal_with("abi = \"one\""),
        Code::InvalidArgument,
        Some("plugin.abi"),
        true,
        "expected an integer",
    );
    assert_eq!(error.position(), Some((7, 7)));
    assert_eq!(parse(&minimal_with("abi = 4294967295")).unwrap().plugin.abi, u32::MAX);
}

#[test]
fn unknown_keys_are_named_with_the_allowed_ones() {
    let error = expect_error(
        &minimal_with("name = \"x\""),
        Code::InvalidArgument,
        Some("plugin.name"),
        true,
        "unknown field `name`",
    );
    assert!(error.message().contains("`entry`"), "{error}");
    assert_eq!(error.position(), Some((7, 1)));
    let error = expect_error(
        &format!("colour = 1\n{MINIMAL}"),
        Code::InvalidArgument,
        Some("colour"),
        true,
        "unknown field `colour`",
    );
    assert!(error.message().contains("`plugin`") && error.message().contains("`provides`"), "{error}");
    assert_eq!(error.position(), Some((1, 1)));
    let error = expect_error(
        &format!("{MINIMAL}[limits]\ntimeout = 5\n"),
        Code::InvalidArgument,
        Some("limits.timeout"),
        true,
        "`timeout_ms`",
    );
    assert_eq!(error.position(), Some((8, 1)));
    expect_error(
        &format!("{MINIMAL}[load]\neager = true\n"),
        Code::InvalidArgument,
        Some("load.eager"),
        true,
        "`lazy`",
    );
    expect_error(
        &format!("{MINIMAL}[plugins]\n"),
        Code::InvalidArgument,
        Some("plugins"),
        true,
        "unknown field",
    );
}

#[test]
fn wrong_types_name_the_path() {
    expect_error(
        &format!("{MINIMAL}[provides]\n\"a@1\" = \"parse\"\n"),
        Code::InvalidArgument,
        Some("provides.\"a@1\""),
        true,
        "expected an array",
    );
    expect_error(
        &format!("{MINIMAL}[provides]\n\"a@1\" = [\"x\", 2]\n"),
        Code::InvalidArgument,
        Some("provides.\"a@1\"[1]"),
        true,
        "expected a string",
    );
    expect_error(
        &format!("{MINIMAL}[permissions]\nnetwork = \"yes\"\n"),
        Code::InvalidArgument,
        Some("permissions.network"),
        true,
        "expected a boolean",
    );
    expect_error(
        &format!("labels = 3\n{MINIMAL}"),
        Code::InvalidArgument,
        Some("labels"),
        true,
        "expected a table",
    );
    expect_error("plugin = 3\n", Code::InvalidArgument, Some("plugin"), true, "expected a table");
    expect_error(
        &format!("{MINIMAL}[limits]\nmemory_mb = 1.5\n"),
        Code::InvalidArgument,
        Some("limits.memory_mb"),
        true,
        "expected an integer",
    );
}

#[test]
fn empty_and_non_utf8_and_non_toml_inputs() {
    for empty in ["", "  \n\t\n", "# only a comment\n"] {
        expect_error(
            empty,
            Code::InvalidArgument,
            Some("plugin"),
            false,
            "the manifest is empty; it needs at least a [plugin] table",
        );
    }
    let error = Manifest::parse(b"\xff\xfe", Path::new(PATH), Some("log-processor")).unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(error.position(), Some((1, 1)));
    assert!(error.message().contains("UTF-8") && error.message().contains("byte offset 0"), "{error}");
    assert_eq!(error.plugin(), Some("log-processor"));
    let error = Manifest::parse(b"[plugin]\nid = \"\xc3(\"\n", Path::new(PATH), None).unwrap_err();
    assert_eq!(error.position(), Some((2, 7)));
    assert!(error.message().contains("byte offset 15"), "{error}");
    let error = expect_error("[plugin", Code::InvalidArgument, None, true, "not valid TOML");
    assert_eq!(error.position().map(|(line, _)| line), Some(1));
    let error = expect_error(
        &format!("{MINIMAL}id = \"again\"\n"),
        Code::InvalidArgument,
        None,
        true,
        "not valid TOML",
    );
    assert_eq!(error.position().map(|(line, _)| line), Some(7));
}

#[test]
fn over_one_mib_is_refused_before_parsing() {
    let mut text = MINIMAL.to_owned();
    text.push('#');
    text.push_str(&"x".repeat(MAX_MANIFEST_BYTES));
    let error = expect_error(&text, Code::InvalidArgument, None, false, "the limit is 1048576 bytes");
    assert!(error.message().contains(&text.len().to_string()), "{error}");
    // Exactly the limit still parses.
    let mut text = MINIMAL.to_owned();
    text.push('#');
    text.push_str(&"x".repeat(MAX_MANIFEST_BYTES - text.len()));
    assert_eq!(text.len(), MAX_MANIFEST_BYTES);
    assert!(parse(&text).is_ok());
}

#[test]
fn read_checks_the_size_and_reports_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(MANIFEST_FILE);
    std::fs::write(&path, MINIMAL).unwrap();
    assert_eq!(Manifest::read(&path, Some("log-processor")).unwrap(), parse(MINIMAL).unwrap());

    std::fs::write(&path, vec![b'#'; MAX_MANIFEST_BYTES + 1]).unwrap();
    let error = Manifest::read(&path, Some("log-processor")).unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(error.message().contains("1048577 bytes"), "{error}");
    assert_eq!(error.file(), Some(path.as_path()));
    assert_eq!(error.plugin(), Some("log-processor"));

    let error = Manifest::read(&dir.path().join("missing.toml"), None).unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    let error = Manifest::read(dir.path(), None).unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(error.message().contains("regular file"), "{error}");
}

#[test]
fn capabilities_and_methods_follow_their_rules() {
    let with = |provides: &str| format!("{MINIMAL}[provides]\n{provides}\n");
    for capability in ["log.parse", "Log.parse@1", "log@", "@1", "log.parse@1a", "-x@1", "a@1@2"] {
        let error = expect_error(
            &with(&format!("\"{capability}\" = [\"parse\"]")),
            Code::InvalidArgument,
            Some(&field_name(&[Seg::Key("provides"), Seg::Key(capability)])),
            true,
            "name@major",
        );
        assert_eq!(error.position(), Some((8, 1)), "points at the key: {error}");
    }
    let long = format!("{}@1", "a".repeat(127));
    expect_error(
        &with(&format!("\"{long}\" = [\"x\"]")),
        Code::InvalidArgument,
        Some(&format!("provides.\"{long}\"")),
        true,
        "at most 128",
    );
    expect_error(&with("\"a@1\" = []"), Code::InvalidArgument, Some("provides.\"a@1\""), true, "no methods");
    let error = expect_error(
        &with("\"a@1\" = [\"parse\", \"parse\"]"),
        Code::InvalidArgument,
        Some("provides.\"a@1\"[1]"),
        true,
        "twice",
    );
    assert_eq!(error.position(), Some((8, 19)));
    for method in ["", "-x", ".x", "pa rse", "p/x", "ü"] {
        expect_error(
            &with(&format!("\"a@1\" = [\"{method}\"]")),
            Code::InvalidArgument,
            Some("provides.\"a@1\"[0]"),
            true,
            "method",
        );
    }
    let ok = parse(&with("\"a.b_c-d@12\" = [\"_x\", \"Parse.Batch-2\"]\n\"b@1\" = [\"x\"]")).unwrap();
    assert_eq!(ok.provides.len(), 2);
    // A plugin may provide nothing and only subscribe.
    assert!(parse(&format!("{MINIMAL}[subscribes]\ntopics = [\"events.*\"]\n")).unwrap().provides.is_empty());
}

#[test]
fn topics_labels_and_env_follow_their_rules() {
    for topic in ["Events", "*", ".x", "events log", ""] {
        expect_error(
            &format!("{MINIMAL}[subscribes]\ntopics = [\"ok\", \"{topic}\"]\n"),
            Code::InvalidArgument,
            Some("subscribes.topics[1]"),
            true,
            "topic",
        );
    }
    expect_error(
        &format!("{MINIMAL}[subscribes]\ntopics = [\"{}\"]\n", "a".repeat(129)),
        Code::InvalidArgument,
        Some("subscribes.topics[0]"),
        true,
        "topic",
    );
    for (key, field) in
        [("Region", "labels.Region"), ("-x", "labels.-x"), ("a b", "labels.\"a b\""), ("", "labels.\"\"")]
    {
        let error = expect_error(
            &format!("{MINIMAL}[labels]\n\"{key}\" = \"v\"\n"),
            Code::InvalidArgument,
            Some(field),
            true,
            "label key",
        );
        assert_eq!(error.position(), Some((8, 1)));
    }
    expect_error(
        &format!("{MINIMAL}[labels]\n{} = \"v\"\n", "a".repeat(64)),
        Code::InvalidArgument,
        Some(&format!("labels.{}", "a".repeat(64))),
        true,
        "1 to 63",
    );
    expect_error(
        &format!("{MINIMAL}[labels]\nk = \"{}\"\n", "v".repeat(257)),
        Code::InvalidArgument,
        Some("labels.k"),
        true,
        "limit is 256",
    );
    expect_error(
        &format!("{MINIMAL}[labels]\nk = \"a\\u0007b\"\n"),
        Code::InvalidArgument,
        Some("labels.k"),
        true,
        "printable",
    );
    let ok = parse(&format!("{MINIMAL}[labels]\n\"app.example/tier\" = \"gold, 1 €\"\n")).unwrap();
    assert_eq!(ok.labels["app.example/tier"], "gold, 1 €");
    for name in ["1TZ", "T-Z", "", "TZ="] {
        expect_error(
            &format!("{MINIMAL}[permissions]\nenv = [\"{name}\"]\n"),
            Code::InvalidArgument,
            Some("permissions.env[0]"),
            true,
            "environment variable",
        );
    }
    assert!(parse(&format!("{MINIMAL}[permissions]\nenv = [\"_X1\", \"tz\"]\n")).is_ok());
}

#[test]
fn permission_paths_stay_in_the_folder() {
    for (name, path) in [("read", "../x"), ("write", "/etc"), ("read", "data/../../x"), ("write", "D:\\\\x")]
    {
        expect_error(
            &format!("{MINIMAL}[permissions]\n{name} = [\"{path}\"]\n"),
            Code::PermissionDenied,
            Some(&format!("permissions.{name}[0]")),
            true,
            "escape",
        );
    }
    expect_error(
        &format!("{MINIMAL}[permissions]\nread = [\"\"]\n"),
        Code::InvalidArgument,
        Some("permissions.read[0]"),
        true,
        "empty",
    );
    let ok = parse(&format!(
        "{MINIMAL}[permissions]\nread = [\".\", \"./data\"]\nwrite = [\"out/x\"]\nnetwork = true\n"
    ))
    .unwrap();
    assert_eq!(ok.permissions.read, [".", "./data"]);
    assert!(ok.permissions.network);
}

#[test]
fn limits_and_restart_ranges() {
    let cases: [(&str, &str, i64, i64); 7] = [
        ("limits", "timeout_ms", 1, 3_600_000),
        ("limits", "max_concurrency", 1, 65_536),
        ("limits", "memory_mb", 1, 1_048_576),
        ("limits", "cpu_percent", 1, 10_000),
        ("limits", "pids", 1, 1_000_000),
        ("restart", "max_restarts", 0, 1000),
        ("restart", "window_s", 1, 86_400),
    ];
    for (table, key, min, max) in cases {
        for bad in [min - 1, max + 1, i64::MIN, i64::MAX] {
            let error = expect_error(
                &format!("{MINIMAL}[{table}]\n{key} = {bad}\n"),
                Code::InvalidArgument,
                Some(&format!("{table}.{key}")),
                true,
                &format!("allowed: {min} to {max}"),
            );
            assert_eq!(error.position(), Some((8, key.len() + 4)));
        }
        for good in [min, max] {
            let manifest = parse(&format!("{MINIMAL}[{table}]\n{key} = {good}\n")).unwrap();
            let json = serde_json::to_value(&manifest).unwrap();
            assert_eq!(json[table][key], good);
        }
    }
    expect_error(
        &format!("{MINIMAL}[restart]\npolicy = \"sometimes\"\n"),
        Code::InvalidArgument,
        Some("restart.policy"),
        true,
        "\"on-failure\"",
    );
    expect_error(
        &format!("{MINIMAL}[restart]\npolicy = \"on_failure\"\n"),
        Code::InvalidArgument,
        Some("restart.policy"),
        true,
        "\"never\"",
    );
}

/// Every numeric field not covered by `limits_and_restart_ranges`, read by the one range
/// check: the same message, the field named, the value's position.
#[test]
fn every_numeric_field_states_its_range_the_same_way() {
    // (table, key, zero meaning, min, max)
    let cases: [(&str, &str, Option<&str>, i64, i64); 10] = [
        ("restart", "backoff_ms", None, 0, 600_000),
        ("restart", "backoff_max_ms", None, 0, 3_600_000),
        ("restart", "snapshot_interval_ms", Some("only on stop"), 10, 86_400_000),
        ("health", "interval_ms", Some("no checks"), 10, 3_600_000),
        ("health", "timeout_ms", None, 1, 600_000),
        ("health", "failures", None, 1, 100),
        ("load", "idle_timeout_ms", Some("never"), 100, 86_400_000),
        ("process", "replicas", None, 1, 64),
        ("process", "start_timeout_ms", None, 1, 600_000),
        ("process", "shutdown_grace_ms", None, 0, 600_000),
    ];
    for (table, key, zero, min, max) in cases {
        let allowed = match zero {
            Some(meaning) => format!("allowed: 0 ({meaning}) or {min} to {max}"),
            None => format!("allowed: {min} to {max}"),
        };
        let mut refused = vec![min - 1, max + 1, i64::MIN, i64::MAX];
        if zero.is_some() {
            refused.push(1);
        }
        for bad in refused {
            let error = expect_error(
                &format!("{MINIMAL}[{table}]\n{key} = {bad}\n"),
                Code::InvalidArgument,
                Some(&format!("{table}.{key}")),
                true,
                &format!("{bad} is out of range; {allowed}"),
            );
            assert_eq!(error.position(), Some((8, key.len() + 4)));
        }
        let mut accepted = vec![min, max];
        if zero.is_some() {
            accepted.push(0);
        }
        for good in accepted {
            let manifest = parse(&format!("{MINIMAL}[{table}]\n{key} = {good}\n")).unwrap();
            let json = serde_json::to_value(&manifest).unwrap();
            assert_eq!(json[table][key], good, "{table}.{key} = {good}");
        }
    }
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let n = 10_000;
    let cases = [
        format!("a = {}1{}", "[".repeat(n), "]".repeat(n)),
        format!("a = {}1{}", "{b=".repeat(n), "}".repeat(n)),
        format!("{} = 1", vec!["x"; n].join(".")),
        format!("[plugin.{}]", vec!["x"; n].join(".")),
    ];
    for case in cases {
        let error = parse(&case).unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
        assert!(error.message().starts_with("not valid TOML"), "{error}");
        fuzz_parse(case.as_bytes());
    }
}

#[test]
fn line_col_counts_characters_from_one() {
    assert_eq!(line_col("", 0), (1, 1));
    assert_eq!(line_col("ab\ncd", 3), (2, 1));
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
    assert_eq!(line_col("é=1", 2), (1, 2));
    assert_eq!(line_col("é", 1), (1, 1));
    assert_eq!(line_col("ab", 99), (1, 3));
}

#[test]
fn fuzz_corpus_replays_without_panic() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/manifest");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            fuzz_parse(&std::fs::read(&path).unwrap());
            count += 1;
        }
    }
    assert!(count >= 10, "only {count} files in {dir}");
}

mod properties {
    use proptest::prelude::*;

    use super::{FULL, PATH};
    use crate::error::Code;
    use crate::manifest::{Manifest, fuzz_parse};
    use std::path::Path;

    /// The `key = value` lines of `FULL`, by line number.
    fn value_lines() -> Vec<usize> {
        FULL.lines().enumerate().filter(|(_, line)| line.contains(" = ")).map(|(index, _)| index).collect()
    }

    fn mutate(line: usize, insert: bool, key: &str, value: &str) -> String {
        let mut lines: Vec<String> = FULL.lines().map(str::to_owned).collect();
        let target = value_lines()[line % value_lines().len()];
        if insert {
            lines.insert(target, format!("{key} = {value}"));
        } else {
            let (existing, _) = lines[target].split_once(" = ").unwrap();
            lines[target] = format!("{existing} = {value}");
        }
        lines.join("\n")
    }

    fn check(text: &str) {
        match Manifest::parse(text.as_bytes(), Path::new(PATH), None) {
            Ok(_) => {}
            Err(error) => {
                assert!(matches!(error.code(), Code::InvalidArgument | Code::PermissionDenied), "{error}");
                assert!(error.field().is_some() || error.position().is_some(), "{error}");
            }
        }
        fuzz_parse(text.as_bytes());
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[ -~]{0,40}",
            any::<String>().prop_map(|text| format!("{text:?}")),
            "\"[a-z0-9./@_-]{0,20}\"",
            any::<i64>().prop_map(|number| number.to_string()),
            Just("[]".to_owned()),
            Just("{}".to_owned()),
            Just("true".to_owned()),
            "\\[(\"[ -~]{0,8}\", ?){0,4}\\]",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn replacing_a_value_never_panics(line in any::<usize>(), value in value()) {
            check(&mutate(line, false, "", &value));
        }

        #[test]
        fn inserting_a_key_never_panics(
            line in any::<usize>(),
            key in "[a-z_\"]{1,12}",
            value in value(),
        ) {
            check(&mutate(line, true, &key, &value));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            fuzz_parse(&bytes);
        }
    }
}

#[test]
fn invoke_and_publish_grants_are_checked_and_matched() {
    for (grant, field) in [
        ("[permissions]\ninvoke = [\"KV@1\"]\n", "permissions.invoke[0]"),
        ("[permissions]\ninvoke = [\"kv@1/\"]\n", "permissions.invoke[0]"),
        ("[permissions]\ninvoke = [\"plugin:Bad\"]\n", "permissions.invoke[0]"),
        ("[permissions]\npublish = [\"Events\"]\n", "permissions.publish[0]"),
    ] {
        let error = parse(&format!("{MINIMAL}{grant}")).unwrap_err();
        assert_eq!(error.field(), Some(field), "{grant}: {error}");
    }
    let text = format!(
        "{MINIMAL}[permissions]\ninvoke = [\"kv@1\", \"text.transform@1/upper\", \"plugin:kv-store/get\"]\npublish = [\"events.*\", \"audit\"]\n"
    );
    let permissions = parse(&text).unwrap().permissions;
    let target = crate::call::Target::parse;
    assert!(permissions.may_invoke(&target("kv@1"), "put"));
    assert!(permissions.may_invoke(&target("text.transform@1"), "upper"));
    assert!(!permissions.may_invoke(&target("text.transform@1"), "lower"));
    assert!(permissions.may_invoke(&target("plugin:kv-store"), "get"));
    assert!(!permissions.may_invoke(&target("plugin:kv-store"), "put"));
    assert!(!permissions.may_invoke(&target("kv@2"), "get"));
    assert!(permissions.may_publish("events.log") && permissions.may_publish("audit"));
    assert!(!permissions.may_publish("events") && !permissions.may_publish("other"));
    assert!(!Permissions::default().may_invoke(&target("kv@1"), "get"), "nothing by default");
    assert!(!Permissions::default().may_publish("events.log"));
}

//! `plugbay run`, the daemon, as a real process on ephemeral ports: its HTTP/JSON API over
//! real sockets, its gRPC API through a tonic client, the CLI as its client, and its
//! shutdown under load.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use plugbay_proto::host::v1 as pb;
use plugbay_proto::host::v1::host_api_client::HostApiClient;
use plugbay_testkit::{PluginsDir, plugbay_binary};

use crate::util::eventually;

use crate::daemon_harness::{Answer, Daemon, PATIENCE, TOKEN, fixture_dir, runtime, sleep_calls};

#[test]
fn http_calls_pass_bodies_and_content_types_through_both_ways() {
    let dir = fixture_dir();
    let daemon = Daemon::start(dir.path(), &[], None);
    let answer = daemon.post_json("/v1/call/text.transform@1/upper", "\"hello\"", &[]);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json(), "HELLO");
    assert_eq!(answer.header("content-type").as_deref(), Some("application/json"));

    let bytes = [0u8, 1, 2, 255];
    let answer = daemon.request(
        "POST",
        "/v1/call/plugin:fixture/echo",
        &[("Content-Type", "application/x-raw")],
        &bytes,
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, bytes);
    assert_eq!(answer.header("content-type").as_deref(), Some("application/x-raw"));

    daemon.post_json("/v1/call/text.transform@1/shout", "\"x\"", &[]).assert_error(403, "permission_denied");
    daemon.post_json("/v1/call/nothing@1/upper", "\"x\"", &[]).assert_error(404, "not_found");
}

#[test]
fn http_plugin_routes_list_show_stop_start_reload_unload_and_load() {
    let dir = fixture_dir();
    let daemon = Daemon::start(dir.path(), &[], None);
    let list = daemon.get("/v1/plugins").json();
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["fixture", "text-tools"]);
    assert_eq!(daemon.get("/v1/plugins/fixture").json()["state"], "running");
    daemon.get("/v1/plugins/nope").assert_error(404, "not_found");

    let state = |answer: Answer| {
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.json()["state"].as_str().unwrap().to_owned()
    };
    assert_eq!(state(daemon.request("POST", "/v1/plugins/text-tools/stop", &[], b"")), "stopped");
    daemon.post_json("/v1/call/text.transform@1/upper", "\"x\"", &[]).assert_error(404, "not_found");
    daemon.post_json("/v1/call/plugin:text-tools/upper", "\"x\"", &[]).assert_error(503, "unavailable");
    daemon.request("POST", "/v1/plugins/text-tools/stop", &[], b"").assert_error(409, "failed_precondition");
    assert_eq!(state(daemon.request("POST", "/v1/plugins/text-tools/start", &[], b"")), "running");
    assert_eq!(state(daemon.request("POST", "/v1/plugins/text-tools/reload", &[], b"")), "running");
    assert_eq!(daemon.post_json("/v1/call/text.transform@1/upper", "\"x\"", &[]).json(), "X");
    daemon.request("POST", "/v1/plugins/text-tools/explode", &[], b"").assert_error(404, "not_found");

    assert_eq!(state(daemon.request("DELETE", "/v1/plugins/fixture", &[], b"")), "unloaded");
    let answer = daemon.post_json("/v1/plugins", r#"{"id": "fixture"}"#, &[]);
    assert_eq!(answer.status, 201, "{answer:?}");
    assert_eq!(answer.json()["state"], "running");
    daemon.post_json("/v1/plugins", r#"{"id": "missing"}"#, &[]).assert_error(404, "not_found");
}

#[test]
fn d1_traversal_shaped_ids_are_refused_and_build_no_path() {
    let dir = fixture_dir();
    let daemon = Daemon::start(dir.path(), &[], None);
    daemon.get("/v1/plugins/..%2f..%2fetc").assert_error(400, "invalid_argument");
    daemon.get("/v1/plugins/..%2F..%2Fetc%2Fpasswd").assert_error(400, "invalid_argument");
    daemon
        .request("POST", "/v1/plugins/..%2f..%2fetc/reload", &[], b"")
        .assert_error(400, "invalid_argument");
    daemon.request("DELETE", "/v1/plugins/%2e%2e", &[], b"").assert_error(400, "invalid_argument");
    daemon.post_json("/v1/plugins", r#"{"id": "../../etc"}"#, &[]).assert_error(400, "invalid_argument");
    daemon.get("/v1/plugins/../../etc/passwd").assert_error(404, "not_found");
    daemon.get("/v1/../../../etc/passwd").assert_error(404, "not_found");
    daemon.post_json("/v1/call/..%2f..%2fetc/upper", "1", &[]).assert_error(404, "not_found");
}

#[test]
fn d10_malformed_requests_get_a_4xx_json_error_and_slow_headers_time_out() {
    let dir = fixture_dir();
    let config = dir.path().join("plugbay.toml");
    std::fs::write(&config, "[api]\nheader_read_timeout_ms = 300\n").unwrap();
    let daemon = Daemon::start(dir.path(), &["--config", config.to_str().unwrap()], None);
    daemon.post_json("/v1/plugins", "{not json", &[]).assert_error(400, "invalid_argument");
    daemon.post_json("/v1/plugins", r#"{"id": 5}"#, &[]).assert_error(400, "invalid_argument");
    daemon.post_json("/v1/plugins", r#"{"id": "x", "extra": 1}"#, &[]).assert_error(400, "invalid_argument");
    daemon
        .request("POST", "/v1/plugins", &[("Content-Type", "text/plain")], b"{}")
        .assert_error(415, "invalid_argument");
    daemon.request("PUT", "/v1/plugins", &[], b"").assert_error(405, "invalid_argument");
    daemon.get("/v1/events?bogus=1").assert_error(400, "invalid_argument");
    for bad in ["0", "-5", "1e12", "1000000000000", "soon", ""] {
        let answer =
            daemon.post_json("/v1/call/text.transform@1/upper", "\"x\"", &[("x-plugbay-timeout-ms", bad)]);
        answer.assert_error(400, "invalid_argument");
    }
    let answer =
        daemon.post_json("/v1/call/text.transform@1/upper", "\"x\"", &[("x-plugbay-timeout-ms", "5000")]);
    assert_eq!(answer.status, 200, "{answer:?}");
    // Not HTTP at all: refused, and the daemon still serves.
    assert_eq!(daemon.raw(b"\x16\x03\x01garbage\r\n\r\n").status / 100, 4);
    // Headers that never finish: the connection is closed after the header read timeout.
    let mut slow = TcpStream::connect(daemon.http).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    assert_eq!(daemon.get("/healthz").status, 200);
}

#[test]
fn wasm_components_compiled_by_one_daemon_are_loaded_from_the_cache_by_the_next() {
    let dir = PluginsDir::new();
    plugbay_testkit::wasm::write_guest(&dir, "guest", &[("guest.test@1", &["echo"])], "");
    let cache = tempfile::tempdir().unwrap();
    let entries = cache.path().join("wasm");
    let config = cache.path().join("plugbay.toml");
    std::fs::write(
        &config,
        format!("[wasm]\ncache_dir = {:?}\npooling = false\n", entries.display().to_string()),
    )
    .unwrap();
    let identity = || -> Vec<(std::path::PathBuf, u64)> {
        use std::os::unix::fs::MetadataExt as _;
        let read = std::fs::read_dir(&entries).expect("the cache directory exists");
        read.map(|entry| entry.unwrap())
            .map(|entry| (entry.path(), entry.metadata().unwrap().ino()))
            .collect()
    };
    let first = {
        let daemon = Daemon::start(dir.path(), &["--config", config.to_str().unwrap()], None);
        let answer = daemon.post_json("/v1/call/guest.test@1/echo", "\"compiled\"", &[]);
        assert_eq!((answer.status, &answer.body[..]), (200, &b"\"compiled\""[..]), "{answer:?}");
        identity()
    };
    assert_eq!(first.len(), 1, "one entry: {first:?}");
    assert!(first[0].0.extension().is_some_and(|extension| extension == "cwasm"), "{first:?}");
    // The next daemon loads the entry as it is: a recompilation would replace the file.
    let daemon = Daemon::start(dir.path(), &["--config", config.to_str().unwrap()], None);
    let answer = daemon.post_json("/v1/call/guest.test@1/echo", "\"cached\"", &[]);
    assert_eq!((answer.status, &answer.body[..]), (200, &b"\"cached\""[..]), "{answer:?}");
    assert_eq!(identity(), first);
}

#[test]
fn d9_oversize_bodies_get_413_before_they_are_read() {
    let dir = fixture_dir();
    let config = dir.path().join("plugbay.toml");
    std::fs::write(&config, "[api]\nmax_body_bytes = 1024\n").unwrap();
    let daemon = Daemon::start(dir.path(), &["--config", config.to_str().unwrap()], None);
    // A declared 1 GiB body, none of it sent: answered at once from the header.
    let started = Instant::now();
    let answer = daemon.raw(
        format!(
            "POST /v1/call/plugin:fixture/echo HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            daemon.http,
            1u64 << 30
        )
        .as_bytes(),
    );
    answer.assert_error(413, "resource_exhausted");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A chunked body that passes the limit while streaming.
    let mut request = format!(
        "POST /v1/call/plugin:fixture/echo HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        daemon.http
    )
    .into_bytes();
    for _ in 0..4 {
        request.extend_from_slice(b"200\r\n");
        request.extend_from_slice(&[b'x'; 0x200]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    daemon.raw(&request).assert_error(413, "resource_exhausted");
    // At the limit it goes through.
    let answer = daemon.request("POST", "/v1/call/plugin:fixture/echo", &[], &[b'y'; 1024]);
    assert_eq!((answer.status, answer.body.len()), (200, 1024));

    runtime().block_on(async {
        let mut client = daemon.grpc().await;
        let request = pb::InvokeRequest {
            target: "plugin:fixture".into(),
            method: "echo".into(),
            payload: vec![b'z'; 4096],
            ..Default::default()
        };
        let status = client.invoke(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    });
}

#[test]
fn d11_every_route_but_health_needs_the_token_and_foreign_host_names_are_refused() {
    let dir = fixture_dir();
    let daemon = Daemon::start(dir.path(), &[], Some(TOKEN));
    daemon.request("POST", "/v1/plugins/fixture/stop", &[], b"").assert_error(401, "permission_denied");
    daemon
        .request(
            "POST",
            "/v1/plugins/fixture/stop",
            &[("Authorization", "Bearer wrong-token-0123456789")],
            b"",
        )
        .assert_error(401, "permission_denied");
    daemon.request("DELETE", "/v1/plugins/fixture", &[], b"").assert_error(401, "permission_denied");
    daemon.post_json("/v1/plugins", r#"{"id":"fixture"}"#, &[]).assert_error(401, "permission_denied");
    let bearer = format!("Bearer {TOKEN}");
    let answer = daemon.request("POST", "/v1/plugins/fixture/stop", &[("Authorization", &bearer)], b"");
    assert_eq!(answer.status, 200, "{answer:?}");
    // With a token set, reading and calling need it too; the health checks do not
    // (tests/all/tokens.rs covers every route and scope).
    daemon.get("/v1/plugins").assert_error(401, "permission_denied");
    daemon.post_json("/v1/call/text.transform@1/upper", "\"x\"", &[]).assert_error(401, "permission_denied");
    assert_eq!(daemon.get("/healthz").status, 200);
    let answer = daemon.post_json("/v1/call/text.transform@1/upper", "\"x\"", &[("Authorization", &bearer)]);
    assert_eq!(answer.status, 200, "{answer:?}");
    // DNS rebinding: a page on evil.example resolving to 127.0.0.1.
    let answer =
        daemon.raw(b"GET /v1/plugins HTTP/1.1\r\nHost: evil.example:7878\r\nConnection: close\r\n\r\n");
    answer.assert_error(403, "permission_denied");
    let request = format!(
        "GET /v1/plugins HTTP/1.1\r\nHost: localhost:1\r\nAuthorization: {bearer}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(daemon.raw(request.as_bytes()).status, 200);

    runtime().block_on(async {
        let mut client = daemon.grpc().await;
        let status = client.start_plugin(pb::PluginRequest { id: "fixture".into() }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let mut request = tonic::Request::new(pb::PluginRequest { id: "fixture".into() });
        request.metadata_mut().insert("authorization", bearer.parse().unwrap());
        assert_eq!(client.start_plugin(request).await.unwrap().into_inner().state, "running");
    });
}

#[test]
fn d11_grpc_calls_addressed_to_a_foreign_authority_are_refused() {
    let dir = fixture_dir();
    let config = dir.path().join("plugbay.toml");
    std::fs::write(&config, "[api]\nallowed_hosts = [\"127.0.0.1\", \"plugbay.internal\"]\n").unwrap();
    let daemon = Daemon::start(dir.path(), &["--config", config.to_str().unwrap()], None);
    runtime().block_on(async {
        // The connection goes to the daemon's port; `:authority` names `origin`.
        let client = |origin: &str| {
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", daemon.grpc))
                .unwrap()
                .origin(origin.parse().unwrap());
            async move { HostApiClient::new(endpoint.connect().await.expect("the gRPC API answers")) }
        };
        let upper = || pb::InvokeRequest {
            target: "text.transform@1".into(),
            method: "upper".into(),
            payload: b"\"x\"".to_vec(),
            content_type: "application/json".into(),
            ..Default::default()
        };
        // DNS rebinding (evil.example resolving to 127.0.0.1), or a name left out of the list.
        for refused in ["http://evil.example:7879", "http://localhost:7879"] {
            let status = client(refused).await.invoke(upper()).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{refused}: {status:?}");
            let host = refused.trim_start_matches("http://").split(':').next().unwrap();
            assert!(
                status.message().contains(&format!("{host:?}"))
                    && status.message().contains("api.allowed_hosts"),
                "{status:?}"
            );
            let status = client(refused).await.list_plugins(pb::ListPluginsRequest {}).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        }
        for allowed in ["http://127.0.0.1:1", "http://PLUGBAY.internal"] {
            let reply = client(allowed).await.invoke(upper()).await.unwrap().into_inner();
            assert_eq!(reply.payload, b"\"X\"", "{allowed}");
        }
    });
    // The HTTP API applies the same list.
    let answer = daemon.raw(b"GET /v1/plugins HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    answer.assert_error(403, "permission_denied");
    let answer =
        daemon.raw(b"GET /v1/plugins HTTP/1.1\r\nHost: plugbay.internal:80\r\nConnection: close\r\n\r\n");
    assert_eq!(answer.status, 200, "{answer:?}");
}

#[test]
fn d11_a_public_bind_without_a_token_is_refused_before_listening() {
    let dir = fixture_dir();
    let output = Command::new(plugbay_binary())
        .args(["run", "--http", "0.0.0.0:0", "--grpc", "127.0.0.1:0", "--plugins"])
        .arg(dir.path())
        .env_remove("PLUGBAY_TOKEN")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(output.stdout.is_empty(), "nothing listened: {output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("0.0.0.0") && stderr.contains("PLUGBAY_TOKEN"), "{stderr}");
}

#[test]
fn config_errors_name_the_file_the_field_and_what_is_allowed() {
    let dir = PluginsDir::new();
    let run = |config: &str| {
        let path = dir.path().join("plugbay.toml");
        std::fs::write(&path, config).unwrap();
        let output = Command::new(plugbay_binary()).arg("run").arg("--config").arg(&path).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        assert!(output.stdout.is_empty(), "nothing listened: {output:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let error = run("[api]\nmax_body = 5\n");
    assert!(
        error.contains("plugbay.toml") && error.contains("max_body") && error.contains("max_body_bytes"),
        "{error}"
    );
    let error = run("[api]\nmax_body_bytes = 0\n");
    assert!(error.contains("api.max_body_bytes") && error.contains("1 to 1073741824"), "{error}");
    let error = run("log_format = \"xml\"\n");
    assert!(error.contains("log_format") && error.contains("\"json\""), "{error}");
    let error = run("[http]\naddr = \"localhost\"\n");
    assert!(error.contains("http.addr") && error.contains("IP:PORT"), "{error}");
    let error = run("[shutdown]\ndrain_timeout_ms = -1\n");
    assert!(error.contains("drain_timeout_ms"), "{error}");
}

#[test]
fn sse_events_carry_lifecycle_transitions_and_metrics_count_calls() {
    let dir = fixture_dir();
    let daemon = Daemon::start(dir.path(), &[], None);
    let mut events = TcpStream::connect(daemon.http).unwrap();
    write!(events, "GET /v1/events?topic=plugbay.lifecycle HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    events.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(events);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("200"), "{line}");
    daemon.request("POST", "/v1/plugins/text-tools/stop", &[], b"");
    let mut seen = String::new();
    while !seen.contains("\"to\":\"stopped\"") {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended: {seen}");
        seen.push_str(&line);
    }
    assert!(seen.contains("event: event") && seen.contains("\"topic\":\"plugbay.lifecycle\""), "{seen}");
    assert!(seen.contains("\"to\":\"draining\""), "{seen}");

    for _ in 0..3 {
        daemon.post_json("/v1/call/plugin:fixture/echo", "1", &[]);
    }
    daemon.post_json("/v1/call/plugin:fixture/panic", "1", &[]);
    daemon.post_json("/v1/call/nothing@1/x", "1", &[]);
    let answer = daemon.get("/metrics");
    assert!(answer.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(answer.body).unwrap();
    for line in [
        "plugbay_plugins_loaded 1",
        "plugbay_calls_total{plugin=\"fixture\",method=\"echo\"} 3",
        // A native plugin's latency is timed one call in 8, starting with the first.
        "plugbay_call_duration_seconds_count{plugin=\"fixture\",method=\"echo\"} 1",
        "plugbay_call_duration_seconds_bucket{plugin=\"fixture\",method=\"echo\",le=\"+Inf\"} 1",
        "plugbay_call_errors_total{plugin=\"fixture\",method=\"panic\",code=\"internal\"} 1",
        "plugbay_call_errors_total{plugin=\"\",method=\"\",code=\"not_found\"} 1",
        "plugbay_plugin_state{plugin=\"text-tools\",state=\"stopped\"} 1",
        "plugbay_plugin_instances{plugin=\"fixture\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn grpc_api_invokes_streams_manages_subscribes_and_reports_health() {
    let dir = fixture_dir();
    let daemon = Daemon::start(dir.path(), &[], None);
    runtime().block_on(async {
        let mut client = daemon.grpc().await;
        let invoke = |target: &str, method: &str, payload: &str, id: u64| pb::InvokeRequest {
            target: target.into(),
            method: method.into(),
            payload: payload.as_bytes().to_vec(),
            content_type: "application/json".into(),
            id,
            timeout_ms: 0,
        };
        let reply =
            client.invoke(invoke("text.transform@1", "upper", "\"grpc\"", 0)).await.unwrap().into_inner();
        assert_eq!(
            (reply.payload.as_slice(), reply.content_type.as_str()),
            (&b"\"GRPC\""[..], "application/json")
        );
        let status = client.invoke(invoke("text.transform@1", "shout", "1", 0)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        let status = client.invoke(invoke("nothing@1", "x", "1", 0)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);

        // Many calls on one stream, answered by id.
        let requests: Vec<_> = (0..20).map(|i| invoke("plugin:fixture", "echo", &i.to_string(), i)).collect();
        let mut results = client.invoke_stream(tokio_stream::iter(requests)).await.unwrap().into_inner();
        let mut seen = std::collections::BTreeSet::new();
        while let Some(result) = results.message().await.unwrap() {
            let Some(pb::invoke_result::Outcome::Response(response)) = result.outcome else {
                panic!("{result:?}")
            };
            assert_eq!(response.payload, result.id.to_string().into_bytes());
            seen.insert(result.id);
        }
        assert_eq!(seen.len(), 20);

        let listed = client.list_plugins(pb::ListPluginsRequest {}).await.unwrap().into_inner();
        assert_eq!(
            listed.plugins.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            ["fixture", "text-tools"]
        );
        let status = client.get_plugin(pb::PluginRequest { id: "nope".into() }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);

        let mut events = client
            .subscribe(pb::SubscribeRequest { topics: vec!["plugbay.lifecycle".into()] })
            .await
            .unwrap()
            .into_inner();
        let id = || pb::PluginRequest { id: "text-tools".into() };
        assert_eq!(client.stop_plugin(id()).await.unwrap().into_inner().state, "stopped");
        assert_eq!(client.start_plugin(id()).await.unwrap().into_inner().state, "running");
        assert_eq!(client.reload_plugin(id()).await.unwrap().into_inner().state, "running");
        assert_eq!(client.unload_plugin(id()).await.unwrap().into_inner().state, "unloaded");
        assert_eq!(client.load_plugin(id()).await.unwrap().into_inner().state, "running");
        let status = client.load_plugin(pb::PluginRequest { id: "../etc".into() }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let mut actions = Vec::new();
        while actions.last().map(String::as_str) != Some("unloaded") {
            let event = tokio::time::timeout(Duration::from_secs(10), events.message())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            actions.push(event.action);
        }
        assert_eq!(actions[..2], ["draining".to_owned(), "stopped".to_owned()], "{actions:?}");

        client
            .publish(pb::PublishRequest {
                topic: "demo.poke".into(),
                action: "poked".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let status =
            client.publish(pb::PublishRequest { topic: "".into(), ..Default::default() }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);

        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", daemon.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = plugbay_proto::tonic_health::pb::health_client::HealthClient::new(channel);
        let serving = health
            .check(plugbay_proto::tonic_health::pb::HealthCheckRequest {
                service: "plugbay.host.v1.HostApi".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            serving.status,
            plugbay_proto::tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    });
}

/// `InvokeStream` runs at most 32 calls of a stream at once (`STREAM_CONCURRENCY` in
/// crates/plugbay/src/daemon/grpc.rs) and reads no further message meanwhile. Two things
/// show it. The plugin takes 32 calls at once (`max_concurrency = 32`), queues 32 more and
/// turns away (`resource_exhausted`) any call beyond those: unbounded, 160 calls sent at
/// once would see 96 turned away. And 160 calls of 100 ms, 32 at a time, take five rounds:
/// at least 500 ms (a bound of 40 or more would need four rounds or fewer).
#[test]
fn invoke_stream_runs_at_most_32_calls_at_once_and_completes_them_all() {
    let dir = PluginsDir::new();
    dir.add_canary();
    dir.add_process_fixture("[limits]\nmax_concurrency = 32\n");
    let daemon = Daemon::start(dir.path(), &[], None);
    let started = Instant::now();
    let results = runtime().block_on(async {
        let mut client = daemon.grpc().await;
        let sleep = |id| pb::InvokeRequest {
            target: "fixture@1".into(),
            method: "sleep".into(),
            payload: b"100".to_vec(),
            content_type: "application/json".into(),
            id,
            timeout_ms: 60_000,
        };
        let requests = tokio_stream::iter((0..160).map(sleep));
        let mut results = client.invoke_stream(requests).await.unwrap().into_inner();
        let mut all = Vec::new();
        while let Some(result) = results.message().await.unwrap() {
            all.push(result);
        }
        all
    });
    let took = started.elapsed();
    let failed: Vec<_> = results
        .iter()
        .filter(|result| !matches!(result.outcome, Some(pb::invoke_result::Outcome::Response(_))))
        .collect();
    assert!(failed.is_empty(), "{} of 160 calls failed, e.g. {:?}", failed.len(), failed.first());
    let ids: std::collections::BTreeSet<u64> = results.iter().map(|result| result.id).collect();
    assert_eq!(ids.len(), 160, "every call answered once");
    assert!(took >= Duration::from_millis(500), "160 calls of 100 ms in {took:?}: more than 32 at once");
    assert_eq!(sleep_calls(&daemon), 160);
}

#[test]
fn f5_sigterm_during_calls_loses_no_call_and_exits_zero() {
    let dir = PluginsDir::new();
    dir.add_process_fixture("");
    let daemon = Daemon::start(dir.path(), &[], None);
    let addr = daemon.http;
    let calls: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                write!(
                    stream,
                    "POST /v1/call/fixture@1/sleep HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 3\r\nConnection: close\r\n\r\n800"
                )
                .unwrap();
                let mut bytes = Vec::new();
                stream.read_to_end(&mut bytes).unwrap();
                Answer::parse(&bytes)
            })
        })
        .collect();
    // The same through gRPC: a unary call and four calls on one stream.
    let grpc = daemon.grpc;
    let grpc_calls = std::thread::spawn(move || {
        runtime().block_on(async move {
            let mut client = HostApiClient::connect(format!("http://{grpc}")).await.unwrap();
            let sleep = |id| pb::InvokeRequest {
                target: "fixture@1".into(),
                method: "sleep".into(),
                payload: b"800".to_vec(),
                content_type: "application/json".into(),
                id,
                timeout_ms: 0,
            };
            let mut unary_client = client.clone();
            let unary = unary_client.invoke(sleep(0));
            let stream = async {
                let mut results =
                    client.invoke_stream(tokio_stream::iter((1..=4).map(sleep))).await?.into_inner();
                let mut answered = Vec::new();
                while let Some(result) = results.message().await? {
                    answered.push(result);
                }
                Ok::<_, tonic::Status>(answered)
            };
            let (unary, stream) = tokio::join!(unary, stream);
            (unary.map(|reply| reply.into_inner().payload), stream)
        })
    });
    // Every call accepted and at the plugin (each sleeps 800 ms): 8 HTTP, 1 unary, 4 streamed.
    let started = || sleep_calls(&daemon);
    eventually(PATIENCE, "the 13 calls to reach the plugin", started, |calls| *calls == 13);
    daemon.terminate();
    std::thread::sleep(Duration::from_millis(100));
    // A call after the signal is not accepted: refused, or answered `unavailable` at once.
    if let Ok(mut late) = TcpStream::connect(addr) {
        let _ = write!(late, "GET /v1/plugins HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let mut bytes = Vec::new();
        let _ = late.read_to_end(&mut bytes);
        let answer = Answer::parse(&bytes);
        assert!(answer.status == 0 || answer.status == 503, "{answer:?}");
    }
    for call in calls {
        let answer = call.join().unwrap();
        assert_eq!(answer.status, 200, "an accepted call completed: {answer:?}");
        assert_eq!(answer.body, b"800");
    }
    let (unary, stream) = grpc_calls.join().unwrap();
    assert_eq!(unary.expect("the unary gRPC call completed"), b"800");
    let stream = stream.expect("the stream ended cleanly");
    assert_eq!(stream.len(), 4, "{stream:?}");
    for result in stream {
        let Some(pb::invoke_result::Outcome::Response(response)) = result.outcome else {
            panic!("{result:?}")
        };
        assert_eq!(response.payload, b"800");
    }
    assert_eq!(daemon.wait(Duration::from_secs(20)), Some(0));
}

#[test]
fn the_cli_talks_to_a_running_daemon() {
    let dir = fixture_dir();
    let daemon = Daemon::start(dir.path(), &[], None);
    let addr = daemon.http.to_string();
    let plugbay = |args: &[&str]| {
        let output = Command::new(plugbay_binary()).args(args).args(["--addr", &addr]).output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, out, _) = plugbay(&["call", "text.transform@1", "upper", "\"cli\""]);
    assert_eq!((code, out.trim()), (Some(0), "\"CLI\""));
    let (code, _, err) = plugbay(&["call", "text.transform@1", "shout", "\"cli\""]);
    assert_eq!(code, Some(1));
    assert!(err.contains("permission_denied"), "{err}");
    let (code, out, _) = plugbay(&["list"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("text-tools") && out.contains("running"), "{out}");
    let mut events = Command::new(plugbay_binary())
        .args(["events", "--topic", "plugbay.lifecycle", "--addr", &addr])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, printed) = std::sync::mpsc::channel();
    let stdout = BufReader::new(events.stdout.take().unwrap());
    std::thread::spawn(move || stdout.lines().map_while(Result::ok).try_for_each(|line| lines.send(line)));
    // Nothing says when the command's subscription is open: stop the plugin until a stop
    // shows up in its output (starting it again between tries).
    let stopped_and_printed = || {
        assert_eq!(plugbay(&["stop", "text-tools"]).1.trim(), "text-tools: stopped");
        let draining = std::iter::from_fn(|| printed.recv_timeout(Duration::from_millis(200)).ok())
            .map(|line| serde_json::from_str::<serde_json::Value>(&line).unwrap())
            .find(|event| event["action"] == "draining");
        if draining.is_none() {
            assert_eq!(plugbay(&["start", "text-tools"]).1.trim(), "text-tools: running");
        }
        draining
    };
    let draining =
        eventually(PATIENCE, "`plugbay events` to print a stop", stopped_and_printed, Option::is_some);
    let draining = draining.unwrap();
    assert_eq!(draining["topic"], "plugbay.lifecycle");
    assert_eq!(draining["payload"]["plugin"], "text-tools");
    let _ = events.kill();
    let _ = events.wait();
    assert_eq!(plugbay(&["start", "text-tools"]).1.trim(), "text-tools: running");
    assert_eq!(plugbay(&["reload", "text-tools"]).1.trim(), "text-tools: running");
    let (code, _, err) = plugbay(&["stop", "nope"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("nope"), "{err}");
    let output = Command::new(plugbay_binary()).args(["list", "--addr", "127.0.0.1:1"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot reach the daemon"), "{output:?}");
}

#[test]
fn crash_reports_are_listed_by_the_api_and_the_cli() {
    let dir = PluginsDir::new();
    dir.add_canary();
    dir.add_process_fixture("[restart]\nbackoff_ms = 1\n");
    let daemon = Daemon::start(dir.path(), &[], None);
    daemon.post_json("/v1/call/fixture@1/exit", "7", &[]).assert_error(503, "unavailable");
    let reports = || {
        let answer = daemon.get("/v1/crashes?plugin=fixture");
        assert_eq!(answer.status, 200);
        answer.json()
    };
    let some = |reports: &serde_json::Value| reports.as_array().is_some_and(|list| !list.is_empty());
    let reports = eventually(PATIENCE, "a crash report of the fixture", reports, some);
    assert_eq!(reports[0]["plugin"], "fixture");
    assert!(reports[0]["reason"].as_str().unwrap().contains("exit status: 7"), "{reports}");
    assert!(reports[0]["action"].as_str().unwrap().starts_with("restart 1 of 5"), "{reports}");
    assert_eq!(daemon.get("/v1/crashes?plugin=text-tools").json(), serde_json::json!([]));
    daemon.get("/v1/crashes?colour=red").assert_error(400, "invalid_argument");
    let output = Command::new(plugbay_binary())
        .args(["crashes", "fixture", "--addr", &daemon.http.to_string()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(out.contains("fixture#0  restart 1 of 5") && out.contains("exit status: 7"), "{out}");
    assert!(out.contains("call exit (1 B"), "{out}");
    // The restarted plugin answers, and the metrics count the restart.
    let echo = || daemon.post_json("/v1/call/fixture@1/echo", "1", &[]);
    eventually(PATIENCE, "the restarted fixture to answer", echo, |answer| answer.status == 200);
    let metrics = String::from_utf8_lossy(&daemon.get("/metrics").body).into_owned();
    assert!(metrics.contains("plugbay_plugin_restarts_total{plugin=\"fixture\"} 1"), "{metrics}");
}

#[test]
fn openapi_describes_every_route_with_its_errors() {
    let dir = fixture_dir();
    let daemon = Daemon::start(dir.path(), &[], None);
    let document = daemon.get("/openapi.json").json();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."), "{document}");
    let mut routes: Vec<String> = Vec::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            routes.push(format!("{} {path}", method.to_uppercase()));
            let responses = operation["responses"].as_object().unwrap();
            let is_v1 = path.starts_with("/v1/");
            assert!(!is_v1 || responses.contains_key("403"), "{method} {path} documents the Host check");
        }
    }
    routes.sort();
    assert_eq!(
        routes,
        [
            "DELETE /v1/plugins/{id}",
            "GET /healthz",
            "GET /metrics",
            "GET /readyz",
            "GET /v1/crashes",
            "GET /v1/events",
            "GET /v1/plugins",
            "GET /v1/plugins/{id}",
            "POST /v1/call/{capability}/{method}",
            "POST /v1/plugins",
            "POST /v1/plugins/{id}/{action}",
        ]
    );
    let error = &document["components"]["schemas"]["ApiError"]["properties"];
    assert!(
        error["code"].is_object() && error["message"].is_object() && error["plugin"].is_object(),
        "{error}"
    );
}

#[test]
fn a_python_grpcio_client_calls_through_stubs_generated_from_our_proto() {
    let dir = fixture_dir();
    let daemon = Daemon::start(dir.path(), &[], None);
    let client = plugbay_testkit::workspace_root().join("examples/clients/host_client.py");
    let run = |args: &[&str]| {
        let output =
            Command::new("python3").arg(&client).arg(daemon.grpc.to_string()).args(args).output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["call", "text.transform@1", "upper", "\"from python\""]);
    assert_eq!(code, Some(0), "{err}");
    let reply: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reply, serde_json::json!({"content_type": "application/json", "payload": "FROM PYTHON"}));
    let (code, out, _) = run(&["list"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("\"text-tools\"") && out.contains("\"running\""), "{out}");
    let (code, _, err) = run(&["call", "text.transform@1", "shout", "1"]);
    assert_eq!(code, Some(1));
    assert!(err.starts_with("error: PERMISSION_DENIED: "), "{err}");
    let (_, _, err) = run(&["call", "nothing@1", "x", "1"]);
    assert!(err.starts_with("error: NOT_FOUND: "), "{err}");
}

/// schemathesis, installed by `scripts/test.sh` into `target/schemathesis`.
fn schemathesis() -> std::path::PathBuf {
    let path = plugbay_testkit::workspace_root().join("target/schemathesis/bin/schemathesis");
    assert!(
        path.exists(),
        "{} is missing; scripts/test.sh installs it (or: python3 -m venv target/schemathesis && \
         target/schemathesis/bin/pip install schemathesis)",
        path.display()
    );
    path
}

#[test]
fn schemathesis_finds_nothing_wrong_with_the_http_api() {
    let dir = fixture_dir();
    let daemon = Daemon::start(dir.path(), &[], None);
    let url = format!("http://{}", daemon.http);
    let output = Command::new(schemathesis())
        .args(["run", &format!("{url}/openapi.json"), "--url", &url, "--max-examples", "25", "--seed", "1"])
        // The event stream never ends, so schemathesis cannot check a response of it.
        .args(["--exclude-path", "/v1/events"])
        // DELETE unloads a plugin, which stays listed (state `unloaded`) so that it can be
        // loaded again; schemathesis's use-after-free check expects a 404 after a DELETE.
        .args(["--exclude-checks", "use_after_free"])
        .env("NO_COLOR", "1")
        // It keeps a cache (`.schemathesis/`) in its working directory.
        .current_dir(dir.path())
        .output()
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("Tested: 10"), "every operation but the event stream was tested:\n{report}");
}

#[test]
fn a_callers_deadline_is_kept_and_capped_by_the_plugins_timeout() {
    let dir = PluginsDir::new();
    dir.add_process_fixture("\n[limits]\ntimeout_ms = 300\n");
    let daemon = Daemon::start(dir.path(), &[], None);
    let sleep = |ms: &str, deadline: &str| {
        let started = Instant::now();
        let answer = daemon.post_json("/v1/call/fixture@1/sleep", ms, &[("x-plugbay-timeout-ms", deadline)]);
        (answer, started.elapsed())
    };
    // The caller's deadline, when sooner than the plugin's.
    let (answer, took) = sleep("2000", "100");
    answer.assert_error(504, "deadline_exceeded");
    assert!(took < Duration::from_millis(280), "{took:?}");
    // The plugin's timeout, when sooner than the caller's.
    let (answer, took) = sleep("2000", "60000");
    answer.assert_error(504, "deadline_exceeded");
    assert!(took >= Duration::from_millis(290) && took < Duration::from_millis(1500), "{took:?}");
    // Within both: answered.
    let (answer, _) = sleep("10", "60000");
    assert_eq!((answer.status, answer.body.as_slice()), (200, &b"10"[..]), "{answer:?}");
    runtime().block_on(async {
        let mut client = daemon.grpc().await;
        let mut request = tonic::Request::new(pb::InvokeRequest {
            target: "fixture@1".into(),
            method: "sleep".into(),
            payload: b"2000".to_vec(),
            content_type: "application/json".into(),
            ..Default::default()
        });
        request.set_timeout(Duration::from_secs(60));
        let started = Instant::now();
        let status = client.invoke(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
        assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
    });
}

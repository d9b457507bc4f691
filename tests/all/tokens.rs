//! Scoped API tokens (`[[api.tokens]]`, made by `plugbay token new`) on every route of both
//! APIs: each called with no token, a wrong one, a token outside its scope and the right
//! one. The HTTP routes come from the daemon's own OpenAPI document and the RPCs from
//! `host.proto`, so a route added later is covered, or this test fails until it is.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use plugbay_proto::host::v1 as pb;
use plugbay_testkit::{plugbay_binary, workspace_root};
use tonic::Code;

use crate::daemon_harness::{Daemon, fixture_dir, runtime};

/// A token made by `plugbay token new`: its secret and its `[[api.tokens]]` entry.
fn token_new(name: &str, scopes: &[&str]) -> (String, String) {
    let mut command = Command::new(plugbay_binary());
    command.args(["token", "new", name]);
    for scope in scopes {
        command.args(["--scope", scope]);
    }
    let output = command.output().unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{text}");
    let secret = text.lines().find(|line| line.starts_with("pbt_")).expect("the secret").to_owned();
    let entry = text.split_once("add to plugbay.toml:\n").expect("the entry").1.to_owned();
    assert!(!entry.contains(&secret), "the config entry never holds the secret: {entry}");
    (secret, entry)
}

/// The three tokens of the test, by role.
struct Tokens {
    reader: String,
    caller: String,
    admin: String,
}

/// Which token a request needs, by the rule the daemon documents.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Need {
    Open,
    Read,
    Manage,
    Call,
}

impl Tokens {
    /// The token that holds `need`, and one that does not.
    fn right_and_out_of_scope(&self, need: Need) -> (&str, &str) {
        match need {
            Need::Open | Need::Read => (&self.reader, &self.caller),
            Need::Manage => (&self.admin, &self.reader),
            Need::Call => (&self.caller, &self.reader),
        }
    }
}

fn start_daemon() -> (Daemon, Tokens, tempfile::TempDir, plugbay_testkit::PluginsDir) {
    let (reader, reader_entry) = token_new("reader", &["read"]);
    let (caller, caller_entry) = token_new("caller", &["call:text.transform@1/*"]);
    let (admin, admin_entry) = token_new("admin", &["manage"]);
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("plugbay.toml");
    std::fs::write(&file, format!("{reader_entry}\n{caller_entry}\n{admin_entry}")).unwrap();
    let dir = fixture_dir();
    let daemon = Daemon::start(dir.path(), &["--config", file.to_str().unwrap()], None);
    (daemon, Tokens { reader, caller, admin }, config, dir)
}

/// The status of one request; reads only the head, so a stream (SSE) is fine.
fn status(daemon: &Daemon, method: &str, path: &str, secret: Option<&str>, body: &str) -> u16 {
    let mut stream = TcpStream::connect(daemon.http).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        daemon.http,
        body.len()
    );
    if let Some(secret) = secret {
        head.push_str(&format!("Authorization: Bearer {secret}\r\n"));
    }
    stream.write_all(format!("{head}\r\n{body}").as_bytes()).unwrap();
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 1024];
    while !bytes.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).unwrap();
        assert!(read > 0, "{method} {path}: the connection closed before the head");
        bytes.extend_from_slice(&buffer[..read]);
    }
    let head = String::from_utf8_lossy(&bytes);
    head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap()
}

#[test]
fn every_http_route_needs_a_token_with_its_scope() {
    let (daemon, tokens, _config, _dir) = start_daemon();
    assert_eq!(status(&daemon, "GET", "/openapi.json", None, ""), 401);
    let document: serde_json::Value = {
        let answer = daemon.request(
            "GET",
            "/openapi.json",
            &[("Authorization", &format!("Bearer {}", tokens.reader))],
            b"",
        );
        answer.json()
    };
    let mut routes = vec![("GET".to_owned(), "/openapi.json".to_owned())];
    for (path, operations) in document["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            routes.push((method.to_uppercase(), path.clone()));
        }
    }
    assert!(routes.len() >= 12, "{routes:?}");
    // The unload last, so the routes before it find the plugin.
    routes.sort_by_key(|(method, _)| method == "DELETE");
    for (method, template) in &routes {
        let path = template
            .replace("{capability}", "text.transform@1")
            .replace("{method}", "upper")
            .replace("{id}", "fixture")
            .replace("{action}", "start");
        let need = match (method.as_str(), path.as_str()) {
            (_, "/healthz" | "/readyz") => Need::Open,
            ("POST", path) if path.starts_with("/v1/call/") => Need::Call,
            ("GET", _) => Need::Read,
            _ => Need::Manage,
        };
        let body = match (method.as_str(), template.as_str()) {
            ("POST", "/v1/plugins") => r#"{"id":"fixture"}"#,
            ("POST", _) => "\"x\"",
            _ => "",
        };
        let route = format!("{method} {template} ({need:?})");
        let (right, out_of_scope) = tokens.right_and_out_of_scope(need);
        let none = status(&daemon, method, &path, None, body);
        let wrong = status(&daemon, method, &path, Some("pbt_not-a-token-of-this-daemon"), body);
        let out = status(&daemon, method, &path, Some(out_of_scope), body);
        let ok = status(&daemon, method, &path, Some(right), body);
        if need == Need::Open {
            assert!(![none, wrong, out, ok].iter().any(|code| [401, 403].contains(code)), "{route}");
            continue;
        }
        assert_eq!((none, wrong, out), (401, 401, 403), "{route}: none, wrong, out of scope");
        assert!(![401, 403].contains(&ok), "{route}: the right token is admitted ({ok})");
    }
    // A call scope names its target: another capability is out of it.
    let other = status(&daemon, "POST", "/v1/call/fixture@1/echo", Some(&tokens.caller), "1");
    assert_eq!(other, 403);
}

/// The RPC names `host.proto` declares for `HostApi`.
fn declared_rpcs() -> Vec<String> {
    let proto = std::fs::read_to_string(workspace_root().join("proto/plugbay/host/v1/host.proto")).unwrap();
    let names = proto.lines().filter_map(|line| line.trim().strip_prefix("rpc ")?.split('(').next());
    names.map(|name| name.trim().to_owned()).collect()
}

fn request<T>(message: T, secret: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(secret) = secret {
        request.metadata_mut().insert("authorization", format!("Bearer {secret}").parse().unwrap());
    }
    request
}

#[test]
fn every_grpc_method_needs_a_token_with_its_scope() {
    let (daemon, tokens, _config, _dir) = start_daemon();
    let rpcs = declared_rpcs();
    assert_eq!(rpcs.len(), 11, "{rpcs:?}");
    runtime().block_on(async {
        let mut client = daemon.grpc().await;
        let invoke = || pb::InvokeRequest {
            target: "text.transform@1".into(),
            method: "upper".into(),
            payload: b"\"x\"".to_vec(),
            content_type: "application/json".into(),
            ..Default::default()
        };
        let plugin = || pb::PluginRequest { id: "fixture".into() };
        // The unload last, then the load.
        let mut ordered = rpcs.clone();
        ordered.sort_by_key(|name| match name.as_str() {
            "UnloadPlugin" => 1,
            "LoadPlugin" => 2,
            _ => 0,
        });
        for name in &ordered {
            let need = match name.as_str() {
                "Invoke" | "InvokeStream" => Need::Call,
                "ListPlugins" | "GetPlugin" | "Subscribe" => Need::Read,
                "LoadPlugin" | "UnloadPlugin" | "ReloadPlugin" | "StopPlugin" | "StartPlugin" | "Publish" => {
                    Need::Manage
                }
                other => panic!("{other} is new in host.proto: say here which scope it needs"),
            };
            let (right, out_of_scope) = tokens.right_and_out_of_scope(need);
            let mut codes = Vec::new();
            for secret in [None, Some("pbt_not-a-token-of-this-daemon"), Some(out_of_scope), Some(right)] {
                let code = match name.as_str() {
                    "Invoke" => client.invoke(request(invoke(), secret)).await.err().map(|s| s.code()),
                    "InvokeStream" => {
                        let stream = tokio_stream::iter([invoke()]);
                        match client.invoke_stream(request(stream, secret)).await {
                            Err(status) => Some(status.code()),
                            Ok(response) => {
                                use tokio_stream::StreamExt as _;
                                let mut results = response.into_inner();
                                let first = results.next().await.unwrap().unwrap();
                                match first.outcome.unwrap() {
                                    pb::invoke_result::Outcome::Error(error) => {
                                        Some(Code::from_i32(error.code))
                                    }
                                    pb::invoke_result::Outcome::Response(_) => None,
                                }
                            }
                        }
                    }
                    "ListPlugins" => client
                        .list_plugins(request(pb::ListPluginsRequest {}, secret))
                        .await
                        .err()
                        .map(|s| s.code()),
                    "GetPlugin" => client.get_plugin(request(plugin(), secret)).await.err().map(|s| s.code()),
                    "LoadPlugin" => {
                        client.load_plugin(request(plugin(), secret)).await.err().map(|s| s.code())
                    }
                    "UnloadPlugin" => {
                        client.unload_plugin(request(plugin(), secret)).await.err().map(|s| s.code())
                    }
                    "ReloadPlugin" => {
                        client.reload_plugin(request(plugin(), secret)).await.err().map(|s| s.code())
                    }
                    "StopPlugin" => {
                        client.stop_plugin(request(plugin(), secret)).await.err().map(|s| s.code())
                    }
                    "StartPlugin" => {
                        client.start_plugin(request(plugin(), secret)).await.err().map(|s| s.code())
                    }
                    "Publish" => {
                        let event = pb::PublishRequest { topic: "test.token".into(), ..Default::default() };
                        client.publish(request(event, secret)).await.err().map(|s| s.code())
                    }
                    "Subscribe" => client
                        .subscribe(request(pb::SubscribeRequest { topics: vec![] }, secret))
                        .await
                        .err()
                        .map(|s| s.code()),
                    other => unreachable!("{other}"),
                };
                codes.push(code);
            }
            let auth = [Some(Code::Unauthenticated), Some(Code::PermissionDenied)];
            assert_eq!(
                &codes[..3],
                [Some(Code::Unauthenticated), Some(Code::Unauthenticated), Some(Code::PermissionDenied)],
                "{name} ({need:?}): none, wrong, out of scope"
            );
            assert!(!auth.contains(&codes[3]), "{name}: the right token is admitted ({:?})", codes[3]);
        }
        // gRPC health needs nothing.
        let mut health = plugbay_proto::tonic_health::pb::health_client::HealthClient::new(
            tonic::transport::Channel::from_shared(format!("http://{}", daemon.grpc))
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
        let check = plugbay_proto::tonic_health::pb::HealthCheckRequest { service: String::new() };
        health.check(check).await.expect("health answers without a token");
    });
}

#[test]
fn bad_token_entries_are_refused_naming_the_field() {
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("plugbay.toml");
    let dir = fixture_dir();
    let cases = [
        (
            "[[api.tokens]]\nname = \"a\"\nsha256 = \"pbt_secret\"\nscopes = [\"read\"]\n",
            "api.tokens[0].sha256",
        ),
        (
            "[[api.tokens]]\nname = \"a\"\nsha256 = \"00000000000000000000000000000000000000000000000000000000000000ab\"\nscopes = [\"write\"]\n",
            "api.tokens[0].scopes: \"write\" is not a scope",
        ),
        (
            "[[api.tokens]]\nname = \"a\"\nsha256 = \"00000000000000000000000000000000000000000000000000000000000000ab\"\nscopes = []\n",
            "a token needs at least one scope",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&file, text).unwrap();
        let output = Command::new(plugbay_binary())
            .args([
                "run",
                "--http",
                "127.0.0.1:0",
                "--grpc",
                "127.0.0.1:0",
                "--config",
                file.to_str().unwrap(),
            ])
            .arg("--plugins")
            .arg(dir.path())
            .env_remove("PLUGBAY_TOKEN")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{expected:?} not in {stderr}");
    }
    let made =
        Command::new(plugbay_binary()).args(["token", "new", "x", "--scope", "writ"]).output().unwrap();
    assert_eq!(made.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&made.stderr).contains("\"writ\" is not a scope"));
}

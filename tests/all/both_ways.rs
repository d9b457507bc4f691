//! One plugin source built both ways: the `text-tools` example as a native library and as
//! a process program (`plugbay_sdk::serve`), each loaded by its own host (one host refuses
//! two plugins with one id), answering the same calls with the same bytes.

use std::time::Duration;

use plugbay_core::{Call, ContentType, Host, Payload, RuntimeKind, State};
use plugbay_testkit::PluginsDir;

use crate::support::{host_over, info};

const CAPABILITY: &str = "text.transform@1";

/// The calls both builds answer: (method, payload, content type).
const CALLS: &[(&str, &str, &str)] = &[
    ("upper", r#""hello, wörld""#, "application/json"),
    ("lower", r#""HeLLo StraSSe""#, "application/json"),
    ("reverse", r#""abc ü""#, "application/json"),
    ("word-count", r#""one two\nthree  four\n""#, "application/json"),
    ("upper", "straße", "text/plain; charset=utf-8"),
    ("lower", "MiXeD", "text/plain"),
    ("reverse", "a\nb", "text/plain"),
    ("word-count", "the quick brown fox\njumps", "text/plain"),
    ("word-count", r#""""#, "application/json"),
    // Errors from the plugin itself: not JSON, a JSON number, not UTF-8.
    ("upper", "hello", "application/json"),
    ("upper", "42", "application/json"),
    ("reverse", "\u{0}\u{1}", "application/json"),
];

/// What a call produced, comparable across hosts: the bytes and content type, or the
/// error's code and message.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Ok { bytes: Vec<u8>, content_type: String },
    Err { code: plugbay_core::Code, message: String },
}

async fn answer(host: &Host, method: &str, payload: Payload) -> Answer {
    let call = Call::new(CAPABILITY, method, payload).with_timeout(Duration::from_secs(10));
    match host.invoke(call).await {
        Ok(reply) => {
            Answer::Ok { bytes: reply.bytes.to_vec(), content_type: reply.content_type.as_str().to_owned() }
        }
        Err(error) => Answer::Err { code: error.code(), message: error.message().to_owned() },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_tools_answers_alike_as_a_native_and_as_a_process_plugin() {
    let native_dir = PluginsDir::new();
    native_dir.add_rust("text-tools", "text-tools", None);
    let process_dir = PluginsDir::new();
    process_dir.add_text_tools_process();
    let native = host_over(&native_dir).await;
    let process = host_over(&process_dir).await;

    // The same plugin, listed with its runtime.
    let (native_info, process_info) = (info(&native, "text-tools"), info(&process, "text-tools"));
    assert_eq!(native_info.state, State::Running, "{native_info:?}");
    assert_eq!(process_info.state, State::Running, "{process_info:?}");
    assert_eq!(native_info.runtime, Some(RuntimeKind::Native));
    assert_eq!(process_info.runtime, Some(RuntimeKind::Process));
    assert_eq!(native_info.version, process_info.version);
    assert_eq!(native_info.capabilities, [CAPABILITY]);
    assert_eq!(process_info.capabilities, native_info.capabilities);

    // The same answers, byte for byte.
    for (method, payload, content_type) in CALLS {
        let payload = || Payload::with_type(payload.as_bytes().to_vec(), ContentType::new(*content_type));
        let from_native = answer(&native, method, payload()).await;
        let from_process = answer(&process, method, payload()).await;
        assert_eq!(from_native, from_process, "{method} {payload:?} ({content_type})", payload = payload());
    }

    // A few answers spelled out, so "alike" cannot mean "alike broken".
    let json = |text: &str| Payload::json(text).unwrap();
    for host in [&native, &process] {
        let upper = host.invoke(Call::new(CAPABILITY, "upper", json("hello"))).await.unwrap();
        assert_eq!(upper.to_json::<String>().unwrap(), "HELLO");
        let lower = host.invoke(Call::new(CAPABILITY, "lower", json("HeLLo"))).await.unwrap();
        assert_eq!(lower.to_json::<String>().unwrap(), "hello");
        let reverse = host.invoke(Call::new(CAPABILITY, "reverse", json("abc"))).await.unwrap();
        assert_eq!(reverse.to_json::<String>().unwrap(), "cba");
        let counts = host.invoke(Call::new(CAPABILITY, "word-count", json("one two\nthree"))).await.unwrap();
        assert_eq!(
            counts.to_json::<serde_json::Value>().unwrap(),
            serde_json::json!({"words": 3, "chars": 13, "lines": 2})
        );
        let error =
            host.invoke(Call::new(CAPABILITY, "upper", Payload::json(&42).unwrap())).await.unwrap_err();
        assert_eq!(error.code(), plugbay_core::Code::InvalidArgument, "{error}");
    }

    // The process build stops like any process plugin: Shutdown, then the program exits.
    process.stop("text-tools").await.unwrap();
    assert_eq!(info(&process, "text-tools").state, State::Stopped);
    native.stop("text-tools").await.unwrap();
}

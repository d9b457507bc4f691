//! The daemon's overhead through its APIs: calls per second, p50 and p99 latency of
//! `plugbay run` (the release binary, a native echo plugin: the testkit's C fixture `cfix`,
//! `echo` of a 7-byte body) beside a bare axum echo and a bare tonic echo ([`bare`])
//! measured in the same run, at concurrency 1, 64 and 1024, over HTTP/1.1 and gRPC.
//!
//! Run: `cargo bench --bench daemon_load` (results: BENCHMARKS.md). It builds the release
//! `plugbay` binary and the plugin through the testkit, starts the daemon and the bare
//! servers (in a child process: each server has its own default tokio runtime, as the daemon
//! has), and drives them from a tokio runtime with 2 workers:
//! - HTTP/1.1: one hyper keep-alive connection per concurrent caller, one request at a time
//!   on each (as `h2load --h1 -c N`).
//! - gRPC: tonic clients, [`STREAMS_PER_CONNECTION`] concurrent calls per HTTP/2
//!   connection (1, 1 and 16 connections at concurrency 1, 64 and 1024).
//!
//! Each line alternates bare server and daemon for [`ROUNDS`] rounds of a warm-up and a
//! timed window, fresh connections each time; every call completed in the window is timed on
//! its own.
//! `PLUGBAY_BENCH_WINDOW_MS` shortens the window for a quick check; `PLUGBAY_BENCH_LINE`
//! (e.g. `http-64`, `grpc-1024`) runs only that line; `PLUGBAY_BENCH_DAEMON` runs that
//! `plugbay` binary instead of the one built from this tree (to compare two builds).

mod bare;
mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use plugbay_proto::host::v1 as daemon_pb;
use plugbay_proto::host::v1::host_api_client::HostApiClient;
use plugbay_proto::plugin::v1 as bare_pb;
use plugbay_proto::plugin::v1::host_service_client::HostServiceClient;
use plugbay_testkit::{PluginsDir, plugbay_binary};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

/// Concurrent callers per line.
const CONCURRENCY: [usize; 3] = [1, 64, 1024];
/// gRPC calls in flight per HTTP/2 connection.
const STREAMS_PER_CONNECTION: usize = 64;
/// Rounds per line; each runs the bare server, then the daemon (the order flips each round):
/// many short rounds, so a burst of other work on the machine hits both sides alike.
const ROUNDS: usize = 8;
/// Calls before the timed window, on the same connections.
const WARM_UP: Duration = Duration::from_millis(300);
/// The timed window of one round.
const WINDOW: Duration = Duration::from_secs(1);
/// The request body: a JSON string, as in the h2load figures.
const BODY: &[u8] = b"\"hello\"";
/// Set in the child that runs the bare servers.
const BARE_CHILD: &str = "PLUGBAY_BENCH_BARE_SERVERS";

/// Which API a line measures.
#[derive(Debug, Clone, Copy)]
enum Api {
    Http,
    Grpc,
}

/// A server under load: where its APIs listen and what a call looks like.
#[derive(Debug, Clone)]
struct Target {
    /// `bare` or `daemon`.
    name: &'static str,
    http: SocketAddr,
    grpc: SocketAddr,
    /// The HTTP route of one call.
    path: &'static str,
}

impl Target {
    fn is_daemon(&self) -> bool {
        self.name == "daemon"
    }
}

/// A server process (the daemon or the bare servers' child); killed when dropped.
struct Server {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    http: SocketAddr,
    grpc: SocketAddr,
}

impl Server {
    /// Starts `command` and reads the addresses from its first line (`http=ADDR grpc=ADDR`).
    fn start(mut command: Command) -> Server {
        let mut child = command.stdout(Stdio::piped()).spawn().expect("the server starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the server prints its addresses");
        let addr = |key: &str| -> SocketAddr {
            let word = line.split_whitespace().find_map(|word| word.strip_prefix(key));
            word.unwrap_or_else(|| panic!("no {key} in {line:?}")).parse().expect("an address")
        };
        let (http, grpc) = (addr("http="), addr("grpc="));
        Server { child, _stdout: stdout, http, grpc }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The latencies of one server on one line, over every round.
#[derive(Debug, Default)]
struct Measured {
    samples: Vec<Duration>,
    errors: usize,
    window: Duration,
}

impl Measured {
    fn add(&mut self, other: Measured) {
        self.samples.extend(other.samples);
        self.errors += other.errors;
        self.window += other.window;
    }

    fn calls_per_second(&self) -> f64 {
        self.samples.len() as f64 / self.window.as_secs_f64()
    }
}

/// When a round's warm-up ends and its window closes.
#[derive(Debug, Clone, Copy)]
struct Phase {
    measure_from: Instant,
    until: Instant,
}

impl Phase {
    fn starting_now(window: Duration) -> Phase {
        let measure_from = Instant::now() + WARM_UP;
        Phase { measure_from, until: measure_from + window }
    }

    /// Whether a call that ended at `end` counts: every call that completes within the
    /// window, once (so calls/s is exact at any concurrency).
    fn counts(&self, end: Instant) -> bool {
        end >= self.measure_from && end < self.until
    }
}

/// Latencies of one caller (a task).
#[derive(Debug, Default)]
struct Caller {
    samples: Vec<Duration>,
    errors: usize,
}

impl Caller {
    fn record(&mut self, phase: &Phase, start: Instant, ok: bool) {
        let end = Instant::now();
        if phase.counts(end) {
            if ok {
                self.samples.push(end - start);
            } else {
                self.errors += 1;
            }
        }
    }
}

/// Collects the callers' latencies into one measurement of `window`.
async fn gather(callers: Vec<tokio::task::JoinHandle<Caller>>, window: Duration) -> Measured {
    let mut measured = Measured { window, ..Measured::default() };
    for caller in callers {
        let caller = caller.await.expect("a caller task");
        measured.samples.extend(caller.samples);
        measured.errors += caller.errors;
    }
    measured
}

/// `concurrency` keep-alive HTTP/1.1 connections, each sending calls one after the other.
async fn http_round(target: &Target, concurrency: usize, window: Duration) -> Measured {
    let mut senders = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let stream = TcpStream::connect(target.http).await.expect("connect to the HTTP API");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("HTTP/1.1 handshake");
        tokio::spawn(connection);
        senders.push(sender);
    }
    let phase = Phase::starting_now(window);
    let host = Arc::<str>::from(target.http.to_string());
    let callers = senders
        .into_iter()
        .map(|mut sender| {
            let (host, path) = (host.clone(), target.path);
            tokio::spawn(async move {
                let mut caller = Caller::default();
                while Instant::now() < phase.until {
                    if sender.ready().await.is_err() {
                        caller.errors += 1;
                        break;
                    }
                    let request = hyper::Request::post(path)
                        .header(HOST, &*host)
                        .header(CONTENT_TYPE, "application/json")
                        .body(Full::new(Bytes::from_static(BODY)))
                        .expect("a request");
                    let start = Instant::now();
                    let ok = match sender.send_request(request).await {
                        Ok(response) => {
                            let success = response.status().is_success();
                            response.into_body().collect().await.is_ok() && success
                        }
                        Err(_) => false,
                    };
                    caller.record(&phase, start, ok);
                }
                caller
            })
        })
        .collect();
    gather(callers, window).await
}

/// A gRPC client of either server.
#[derive(Clone)]
enum GrpcClient {
    Bare(HostServiceClient<Channel>),
    Daemon(HostApiClient<Channel>),
}

impl GrpcClient {
    /// A client on a new HTTP/2 connection to `target`.
    async fn connect(target: &Target) -> GrpcClient {
        let endpoint = Endpoint::from_shared(format!("http://{}", target.grpc)).expect("an endpoint");
        let channel = endpoint.connect().await.expect("connect to the gRPC API");
        if target.is_daemon() {
            GrpcClient::Daemon(HostApiClient::new(channel))
        } else {
            GrpcClient::Bare(HostServiceClient::new(channel))
        }
    }

    /// One call; the reply's payload.
    async fn call(&mut self) -> Result<Vec<u8>, tonic::Status> {
        let (target, method, content_type) = ("cfix@1", "echo", "application/json");
        match self {
            GrpcClient::Bare(client) => {
                let request = bare_pb::InvokeRequest {
                    target: target.into(),
                    method: method.into(),
                    payload: BODY.to_vec(),
                    content_type: content_type.into(),
                };
                Ok(client.invoke(request).await?.into_inner().payload)
            }
            GrpcClient::Daemon(client) => {
                let request = daemon_pb::InvokeRequest {
                    target: target.into(),
                    method: method.into(),
                    payload: BODY.to_vec(),
                    content_type: content_type.into(),
                    ..Default::default()
                };
                Ok(client.invoke(request).await?.into_inner().payload)
            }
        }
    }
}

/// `concurrency` callers on `concurrency / STREAMS_PER_CONNECTION` (at least one) HTTP/2
/// connections, each caller one call at a time.
async fn grpc_round(target: &Target, concurrency: usize, window: Duration) -> Measured {
    let mut clients = Vec::new();
    for _ in 0..concurrency.div_ceil(STREAMS_PER_CONNECTION) {
        clients.push(GrpcClient::connect(target).await);
    }
    let phase = Phase::starting_now(window);
    let callers = (0..concurrency)
        .map(|index| {
            let mut client = clients[index % clients.len()].clone();
            tokio::spawn(async move {
                let mut caller = Caller::default();
                while Instant::now() < phase.until {
                    let start = Instant::now();
                    let ok = client.call().await.is_ok();
                    caller.record(&phase, start, ok);
                }
                caller
            })
        })
        .collect();
    gather(callers, window).await
}

async fn round(api: Api, target: &Target, concurrency: usize, window: Duration) -> Measured {
    match api {
        Api::Http => http_round(target, concurrency, window).await,
        Api::Grpc => grpc_round(target, concurrency, window).await,
    }
}

/// One call to each API of `target`, checked, before any load.
async fn check_answers(target: &Target) {
    let expected: &[u8] = BODY;
    let reply = GrpcClient::connect(target).await.call().await.expect("a gRPC call succeeds");
    assert_eq!(reply, expected, "{}: gRPC reply", target.name);
    let stream = TcpStream::connect(target.http).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::post(target.path)
        .header(HOST, target.http.to_string())
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(BODY)))
        .unwrap();
    let response = sender.send_request(request).await.expect("an HTTP call");
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(status.is_success(), "{}: HTTP {status}: {body:?}", target.name);
    assert_eq!(&body[..], expected, "{}: HTTP reply", target.name);
}

/// Waits until the daemon's `/readyz` answers 200 (the plugins folder is loaded).
fn wait_ready(http: SocketAddr) {
    let started = Instant::now();
    loop {
        let mut answer = String::new();
        if let Ok(mut stream) = std::net::TcpStream::connect(http) {
            let request = format!("GET /readyz HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
            let _ = stream.write_all(request.as_bytes());
            let _ = stream.read_to_string(&mut answer);
        }
        if answer.starts_with("HTTP/1.1 200") {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the daemon got ready: {answer:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Raises the soft limit of open files (1024 connections need more than the usual 1024);
/// the servers started afterwards inherit it.
fn raise_open_files() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let wanted = limit.maximum.map_or(65_536, |maximum| maximum.min(65_536));
    if limit.current.is_some_and(|current| current >= wanted) {
        return;
    }
    let raised = Rlimit { current: Some(wanted), maximum: limit.maximum };
    if let Err(error) = setrlimit(Resource::Nofile, raised) {
        eprintln!("cannot raise RLIMIT_NOFILE to {wanted}: {error}");
    }
    if wanted < 4096 {
        eprintln!("RLIMIT_NOFILE is {wanted}: concurrency 1024 may run out of descriptors");
    }
}

fn micros(duration: Duration) -> String {
    let micros = duration.as_secs_f64() * 1e6;
    if micros >= 1000.0 { format!("{:.2} ms", micros / 1000.0) } else { format!("{micros:.0} µs") }
}

impl Api {
    fn name(self) -> &'static str {
        match self {
            Api::Http => "http",
            Api::Grpc => "grpc",
        }
    }
}

/// One line of the table: both servers, and the daemon's share of the bare rate. Prints
/// each server's percentiles as it goes.
fn row(api: Api, concurrency: usize, bare: Measured, daemon: Measured) -> String {
    let label = match api {
        Api::Http => "HTTP/1.1".to_owned(),
        Api::Grpc => format!("gRPC ({} conn.)", concurrency.div_ceil(STREAMS_PER_CONNECTION)),
    };
    let (bare_rate, daemon_rate) = (bare.calls_per_second(), daemon.calls_per_second());
    let errors = bare.errors + daemon.errors;
    for (name, measured) in [("bare", &bare), ("daemon", &daemon)] {
        let line = format!("daemon_load/{}/{concurrency}/{name}", api.name());
        common::report(&line, measured.samples.clone());
    }
    let (bare_p50, bare_p99) = common::percentiles(bare.samples);
    let (daemon_p50, daemon_p99) = common::percentiles(daemon.samples);
    format!(
        "| {label} | {concurrency} | {bare_rate:.0} | {daemon_rate:.0} | {:.0}% | {} / {} | {} / {} | {:.2} / {:.2} | {errors} |",
        100.0 * daemon_rate / bare_rate,
        micros(bare_p50),
        micros(daemon_p50),
        micros(bare_p99),
        micros(daemon_p99),
        daemon_p50.as_secs_f64() / bare_p50.as_secs_f64(),
        daemon_p99.as_secs_f64() / bare_p99.as_secs_f64(),
    )
}

fn main() {
    if std::env::var_os(BARE_CHILD).is_some() {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime for the bare servers");
        runtime.block_on(bare::run()).expect("the bare servers serve");
        return;
    }
    raise_open_files();
    let window = std::env::var("PLUGBAY_BENCH_WINDOW_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(WINDOW, Duration::from_millis);

    let plugins = PluginsDir::new();
    plugins.add_c_fixture("cfix", &[]);
    let binary = std::env::var_os("PLUGBAY_BENCH_DAEMON").map_or_else(plugbay_binary, Into::into);
    let mut daemon = Command::new(binary);
    daemon
        .args(["run", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--plugins"])
        .arg(plugins.path())
        .env_remove("PLUGBAY_TOKEN");
    let daemon = Server::start(daemon);
    let mut bare = Command::new(std::env::current_exe().expect("this benchmark's path"));
    bare.env(BARE_CHILD, "1");
    let bare = Server::start(bare);
    wait_ready(daemon.http);
    let targets = [
        Target { name: "bare", http: bare.http, grpc: bare.grpc, path: bare::HTTP_PATH },
        Target { name: "daemon", http: daemon.http, grpc: daemon.grpc, path: "/v1/call/cfix@1/echo" },
    ];

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the load generator's runtime");
    runtime.block_on(async {
        for target in &targets {
            check_answers(target).await;
        }
        println!(
            "{} rounds of {} ms warm-up + {} ms per server and line, alternating",
            ROUNDS,
            WARM_UP.as_millis(),
            window.as_millis()
        );
        let mut rows = Vec::new();
        let only = std::env::var("PLUGBAY_BENCH_LINE").ok();
        for api in [Api::Http, Api::Grpc] {
            for concurrency in CONCURRENCY {
                let line = format!("{}-{concurrency}", if matches!(api, Api::Http) { "http" } else { "grpc" });
                if only.as_ref().is_some_and(|only| *only != line) {
                    continue;
                }
                let mut measured = [Measured::default(), Measured::default()];
                for turn in 0..ROUNDS {
                    // Bare first in even rounds, daemon first in odd ones.
                    for index in [turn % 2, 1 - turn % 2] {
                        let result = round(api, &targets[index], concurrency, window).await;
                        measured[index].add(result);
                    }
                }
                let [bare, daemon] = measured;
                rows.push(row(api, concurrency, bare, daemon));
            }
        }
        println!(
            "\n| API | concurrency | bare calls/s | daemon calls/s | daemon / bare | p50 bare / daemon | p99 bare / daemon | daemon / bare latency p50 / p99 | errors |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for row in rows {
            println!("{row}");
        }
    });
    drop((daemon, bare, plugins));
}

//! The daemon as the tests drive it: `plugbay run` as a real process on ephemeral ports,
//! raw HTTP/1.1 requests over real sockets, and a tonic client of its gRPC API.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use plugbay_proto::host::v1::host_api_client::HostApiClient;
use plugbay_testkit::{PluginsDir, plugbay_binary};

use crate::util::eventually;

/// A token long enough for the daemon.
pub(crate) const TOKEN: &str = "test-token-0123456789";

/// A daemon process; killed when dropped.
pub(crate) struct Daemon {
    child: Child,
    pub(crate) http: SocketAddr,
    pub(crate) grpc: SocketAddr,
}

impl Daemon {
    /// Starts `plugbay run` on `dir` with ephemeral ports and waits until it is ready.
    pub(crate) fn start(dir: &Path, extra: &[&str], token: Option<&str>) -> Daemon {
        let mut command = Command::new(plugbay_binary());
        command
            .args(["run", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--plugins"])
            .arg(dir)
            .args(extra)
            .env_remove("PLUGBAY_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(token) = token {
            command.env("PLUGBAY_TOKEN", token);
        }
        let mut child = command.spawn().expect("plugbay run starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("the listening line");
        let addr = |key: &str| -> SocketAddr {
            let word = line.split_whitespace().find_map(|word| word.strip_prefix(key));
            word.unwrap_or_else(|| panic!("no {key} in {line:?}")).parse().unwrap()
        };
        let daemon = Daemon { http: addr("http="), grpc: addr("grpc="), child };
        eventually(
            Duration::from_secs(20),
            "the daemon to be ready",
            || daemon.get("/readyz"),
            |answer| answer.status == 200,
        );
        daemon
    }

    /// Sends raw request bytes and reads the whole answer (the connection is closed after).
    pub(crate) fn raw(&self, request: &[u8]) -> Answer {
        let mut stream = TcpStream::connect(self.http).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        stream.write_all(request).unwrap();
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        Answer::parse(&bytes)
    }

    /// One request with `Connection: close`, a Host header naming the daemon, and a body.
    pub(crate) fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.http,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        self.raw(&request)
    }

    pub(crate) fn get(&self, path: &str) -> Answer {
        self.request("GET", path, &[], b"")
    }

    pub(crate) fn post_json(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> Answer {
        let mut all = vec![("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        self.request("POST", path, &all, body.as_bytes())
    }

    pub(crate) async fn grpc(&self) -> HostApiClient<tonic::transport::Channel> {
        HostApiClient::connect(format!("http://{}", self.grpc)).await.expect("the gRPC API answers")
    }

    pub(crate) fn terminate(&self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    }

    /// Waits for the process to exit and returns its status code.
    pub(crate) fn wait(mut self, limit: Duration) -> Option<i32> {
        let exited =
            eventually(limit, "the daemon to exit", || self.child.try_wait().unwrap(), Option::is_some);
        exited.and_then(|status| status.code())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) head: String,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    pub(crate) fn parse(bytes: &[u8]) -> Answer {
        let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").map_or(bytes.len(), |at| at + 4);
        let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
        let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
        let mut body = bytes[split..].to_vec();
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            body = dechunk(&body);
        }
        Answer { status, head, body }
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
        })
    }

    /// Asserts a JSON error with this status and code.
    pub(crate) fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        let json = self.json();
        assert_eq!(json["code"], code, "{json}");
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()), "{json}");
    }
}

pub(crate) fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&body[..end]).unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[end + 4 + size..];
    }
    out
}

/// How long a test waits for what the daemon does in the background.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// `plugbay_calls_total` of the fixture's `sleep` in the daemon's `/metrics` (0 before any).
pub(crate) fn sleep_calls(daemon: &Daemon) -> u64 {
    let text = String::from_utf8(daemon.get("/metrics").body).unwrap();
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("plugbay_calls_total{plugin=\"fixture\",method=\"sleep\"} "));
    line.map_or(0, |count| count.parse().unwrap())
}

pub(crate) fn fixture_dir() -> PluginsDir {
    let dir = PluginsDir::new();
    dir.add_canary();
    dir.add_fixture();
    dir
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

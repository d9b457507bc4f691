//! Starting, watching and stopping one plugin program.
//!
//! Hygiene every program gets: stdin is `/dev/null`; the environment is cleared but for
//! the manifest's `permissions.env` and the handshake variables; its own process group;
//! SIGKILL when the host dies (armed by a long-lived spawner thread, since the kernel ties
//! the signal to the thread that started the child); stdout and stderr read continuously; signals sent
//! through a pidfd, so a reused pid is never hit; its private directory (mode 0700, holding
//! both sockets) removed when it stops.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::Duration;

use plugbay_proto::handshake::env;
use tokio::net::unix::pipe;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};

use crate::config::{MAX_SOCKET_PATH, SOCKET_DIR_ID_BYTES};
use crate::error::{Error, Result};
use crate::runtime::process::handshake::{self, PLUGIN_COOKIE, Transport};
use crate::runtime::process::output::{self, LineReader, Tail};
use plugbay_sandbox as sandbox;
use plugbay_sandbox::child::ExitStatus;
use plugbay_sandbox::spawn::{Launch, Started};
use plugbay_sandbox::{Contained, Prepared, ProgramImage};

/// What to start.
pub(crate) struct Program<'a> {
    /// The plugin id.
    pub(crate) plugin: &'a str,
    /// The plugin folder (the working directory).
    pub(crate) folder: &'a Path,
    /// The program, inside the folder.
    pub(crate) program: PathBuf,
    /// Its verified bytes, executed instead of the path when set (ELF programs).
    pub(crate) image: Option<Arc<ProgramImage>>,
    /// Its arguments.
    pub(crate) args: &'a [String],
    /// Host environment variables it may see.
    pub(crate) env: &'a [String],
    /// The transports offered in the handshake.
    pub(crate) transports: &'a [Transport],
}

/// A started program that completed the handshake.
pub(crate) struct Running {
    pub(crate) plugin: Arc<str>,
    /// The socket the plugin serves on.
    pub(crate) socket: PathBuf,
    /// The transport the plugin chose in its handshake.
    pub(crate) transport: Transport,
    /// `Some` once the program exited: how.
    pub(crate) exited: watch::Receiver<Option<ExitStatus>>,
    /// Its last stderr lines.
    pub(crate) stderr: Arc<Tail>,
    pid: u32,
    pidfd: Option<OwnedFd>,
    /// Removed when the program is dropped.
    _dir: tempfile::TempDir,
}

/// The directory and socket paths a program gets before it starts.
pub(crate) struct Sockets {
    dir: tempfile::TempDir,
    /// Where the plugin must listen.
    pub(crate) plugin: PathBuf,
    /// Where the host serves callbacks.
    pub(crate) host: PathBuf,
}

/// The settings that choose where private directories are made, named in errors.
const SOCKET_DIR_SETTINGS: &str =
    "HostConfig::process_socket_dir, [process] socket_dir in plugbay.toml, else TMPDIR";

impl Sockets {
    /// The private directory.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A new private directory (mode 0700) in `parent` (default: the system's temporary
    /// directory) with the two socket paths in it. The directory is named after the plugin
    /// (its id cut to 20 bytes, so the paths fit).
    pub(crate) fn new(plugin: &str, parent: Option<&Path>) -> Result<Sockets> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let name = &plugin[..plugin.len().min(SOCKET_DIR_ID_BYTES)];
        let dir = tempfile::Builder::new()
            .prefix(&format!("plugbay-{name}-"))
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(&parent)
            .map_err(|error| {
                Error::precondition(format!(
                    "cannot create the plugin's private directory in {} (the process socket \
                     directory: {SOCKET_DIR_SETTINGS}): {error}",
                    parent.display()
                ))
            })?;
        let plugin = dir.path().join("plugin.sock");
        let host = dir.path().join("host.sock");
        if plugin.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(Error::precondition(format!(
                "the plugin's socket path {} is {} bytes, more than the {MAX_SOCKET_PATH} a Unix socket \
                 path may have; use a shorter directory ({SOCKET_DIR_SETTINGS})",
                plugin.display(),
                plugin.as_os_str().len()
            )));
        }
        Ok(Sockets { dir, plugin, host })
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The thread that starts every plugin program. It never exits, so the parent-death signal
/// armed in the child fires only when the host process dies.
fn spawner() -> &'static mpsc::Sender<Job> {
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (sender, jobs) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("plugbay-spawner".into())
            .spawn(move || {
                SPAWNER_TID.store(thread_id(), std::sync::atomic::Ordering::Relaxed);
                for job in jobs {
                    job();
                }
            })
            .expect("the spawner thread starts");
        sender
    })
}

/// The spawner thread's id, once it runs (0 before).
static SPAWNER_TID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// This thread's id.
fn thread_id() -> i32 {
    rustix::thread::gettid().as_raw_nonzero().get()
}

/// Where the spawner thread waits in the kernel (`/proc/self/task/<tid>/wchan`, and the
/// top of its kernel stack where readable), for the error of a start it did not answer.
fn spawner_whereabouts() -> String {
    let tid = SPAWNER_TID.load(std::sync::atomic::Ordering::Relaxed);
    let read = |file: &str| std::fs::read_to_string(format!("/proc/self/task/{tid}/{file}")).ok();
    let wchan = read("wchan").filter(|wchan| !wchan.is_empty() && wchan != "0");
    let stack = read("stack").map(|stack| {
        let frames: Vec<&str> =
            stack.lines().take(4).filter_map(|line| line.split_whitespace().nth(1)).collect();
        frames.join(" < ")
    });
    match (wchan, stack) {
        (_, Some(stack)) if !stack.is_empty() => format!(" (it waits in the kernel at {stack})"),
        (Some(wchan), _) => format!(" (it waits in the kernel at {wchan})"),
        _ => String::new(),
    }
}

/// Hands `launch` to the spawner thread; its answer comes through the returned [`Answer`].
/// If no one waits for the answer any more, the spawner kills the program it started.
fn start_on_spawner(launch: Launch, sandbox: Option<Prepared>) -> std::io::Result<Answer> {
    let (reply, answer) = oneshot::channel();
    let job: Job = Box::new(move || {
        let started = match sandbox {
            Some(sandbox) => launch.start_contained(sandbox),
            None => launch.start(),
        };
        if let Err(Ok(orphan)) = reply.send(started) {
            kill_and_reap(orphan);
        }
    });
    spawner().send(job).map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    Ok(Answer(answer))
}

/// The spawner thread's answer for one program. Dropped before it was taken (the start
/// was abandoned: its caller gave up, or the runtime shut down), it kills and reaps the
/// program, whether the answer had come yet or not.
struct Answer(oneshot::Receiver<std::io::Result<Started>>);

impl Answer {
    /// The started program, waiting for the answer until `deadline`.
    async fn take(mut self, deadline: tokio::time::Instant) -> std::io::Result<Started> {
        match tokio::time::timeout_at(deadline, &mut self.0).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(std::io::Error::other("the spawner thread dropped the request")),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the spawner thread did not answer within the start timeout{}",
                    spawner_whereabouts()
                ),
            )),
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        // After `close`, either the answer is here or the spawner's send fails (and it
        // kills the program itself). Once taken, there is nothing left to receive.
        self.0.close();
        if let Ok(Ok(orphan)) = self.0.try_recv() {
            kill_and_reap(orphan);
        }
    }
}

/// Kills a started program no one will watch, and reaps it (its [`Reaper`]'s drop does both).
fn kill_and_reap(started: Started) {
    drop(Reaper::new(started));
}

/// Reaps the program when it exits: kills what is left of its process group first (while
/// its pid, the group id, is still reserved), then publishes how it ended. If the task is
/// dropped first (the runtime shuts down), the drop kills and reaps, so no zombie remains.
struct Reaper {
    pid: rustix::process::Pid,
    pidfd: OwnedFd,
    /// A sandboxed program's helper report and cgroup (dropped after the reap, which
    /// kills anything left in the cgroup and removes it).
    contained: Option<Contained>,
    reaped: bool,
}

impl Reaper {
    fn new(started: Started) -> Reaper {
        Reaper { pid: started.pid, pidfd: started.pidfd, contained: started.contained, reaped: false }
    }

    async fn run(mut self, exit_sender: watch::Sender<Option<ExitStatus>>) {
        if let Ok(watch) = self.pidfd.try_clone() {
            sandbox::child::exited(watch).await;
        }
        let _ = rustix::process::kill_process_group(self.pid, rustix::process::Signal::KILL);
        let mut exit = self.reap(Duration::from_secs(1));
        // A sandboxed program's pid is its helper's; the helper says how the program ended.
        if let Some(program) = self.contained.take().and_then(|contained| contained.program_exit()) {
            exit = program;
        }
        let _ = exit_sender.send(Some(exit));
    }

    fn reap(&mut self, limit: Duration) -> ExitStatus {
        self.reaped = true;
        match sandbox::child::reap(&self.pidfd, limit) {
            Ok(Some(status)) => ExitStatus::from_wait(&status),
            Ok(None) => {
                tracing::warn!(
                    pid = self.pid.as_raw_nonzero().get(),
                    "a plugin program ended but could not be reaped"
                );
                ExitStatus::Unknown
            }
            Err(error) => {
                tracing::warn!(
                    pid = self.pid.as_raw_nonzero().get(),
                    "a plugin program could not be waited for: {error}"
                );
                ExitStatus::Unknown
            }
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::KILL);
            let _ = rustix::process::kill_process_group(self.pid, rustix::process::Signal::KILL);
            self.reap(Duration::from_secs(1));
        }
    }
}

/// Starts `program` with the handshake environment and waits for its handshake line.
/// Everything (spawn, handshake) happens within `timeout`; on any failure the program is
/// killed and the error says why, with its exit status and last stderr lines when known.
/// Dropping the future before it finishes kills the program too. Its background tasks
/// (output pumps, the reaper) run on `handle`.
///
/// The line is read without first waiting for the spawner thread's answer: the answer is
/// almost always there by the time the line is, so the task wakes once, not twice. A
/// program that could not be started closes the pipe unwritten, and the spawner's error is
/// reported then.
pub(crate) async fn start(
    program: Program<'_>,
    sockets: Sockets,
    sandbox: Option<Prepared>,
    timeout: Duration,
    handle: &Handle,
) -> Result<Running> {
    let deadline = tokio::time::Instant::now() + timeout;
    let plugin: Arc<str> = Arc::from(program.plugin);
    let versions = handshake::offered_versions();
    let transports = handshake::offered_transports(program.transports);
    let allowed = program.env.iter().filter_map(|name| std::env::var_os(name).map(|value| (name, value)));
    let allowed: Vec<(OsString, OsString)> = allowed.map(|(name, value)| (name.into(), value)).collect();
    let handshake_env = [
        (env::COOKIE, OsStr::new(PLUGIN_COOKIE)),
        (env::PROTOCOL_VERSIONS, OsStr::new(&versions)),
        (env::TRANSPORTS, OsStr::new(&transports)),
        (env::SOCKET, sockets.plugin.as_os_str()),
        (env::HOST_SOCKET, sockets.host.as_os_str()),
        (env::PLUGIN_ID, OsStr::new(program.plugin)),
    ];
    // The optional parts of the framed transport this host speaks, when it offers framed.
    let framed_env = program
        .transports
        .contains(&Transport::Framed)
        .then_some((env::FRAMED_FEATURES, OsStr::new(super::framed::FEATURES)));
    let env = allowed.iter().map(|(name, value)| (name.as_os_str(), value.as_os_str())).chain(
        handshake_env.iter().chain(framed_env.iter()).map(|(name, value)| (OsStr::new(*name), *value)),
    );
    let cannot_start = |error| cannot_start(&program.program, error);
    let (launch, output) =
        Launch::new(&program.program, program.args.iter().map(OsStr::new), env, program.folder)
            .map_err(cannot_start)?;
    let launch = match program.image.clone() {
        Some(image) => launch.with_image(image),
        None => launch,
    };
    let stdout = pipe::Receiver::from_owned_fd(output.stdout).map_err(cannot_start)?;
    let stderr = pipe::Receiver::from_owned_fd(output.stderr).map_err(cannot_start)?;
    // The program makes its socket as the user it runs as: the sandbox's, else the host's.
    let owner = sandbox.as_ref().map_or_else(|| rustix::process::geteuid().as_raw(), Prepared::uid);
    let answer = start_on_spawner(launch, sandbox).map_err(cannot_start)?;
    let tail = Arc::new(Tail::default());
    handle.spawn(output::pump(LineReader::new(stderr), plugin.clone(), "stderr", Some(tail.clone())));
    let mut lines = LineReader::new(stdout);
    let line = tokio::time::timeout_at(deadline, lines.next_line()).await;
    let started = answer.take(deadline).await.map_err(cannot_start)?;
    let pid = started.pid;
    let (exit_sender, exited) = watch::channel(None);
    let mut running = Running {
        plugin,
        socket: sockets.plugin,
        transport: Transport::Grpc,
        exited,
        stderr: tail,
        pid: pid.as_raw_nonzero().get() as u32,
        pidfd: started.pidfd.try_clone().ok(),
        _dir: sockets.dir,
    };
    handle.spawn(Reaper::new(started).run(exit_sender));
    let no_handshake = || {
        Error::unavailable(format!(
            "no handshake within the start timeout of {} ms; the program was killed",
            timeout.as_millis()
        ))
    };
    let result = match line {
        Ok(line) => {
            let checked = read_handshake(&mut running, lines, line, program.transports, owner, handle);
            tokio::time::timeout_at(deadline, checked).await.unwrap_or_else(|_| Err(no_handshake()))
        }
        Err(_) => Err(no_handshake()),
    };
    match result {
        Ok(()) => Ok(running),
        Err(error) => {
            running.kill();
            Err(running.explain(error).await)
        }
    }
}

/// The error for a program that could not be started.
fn cannot_start(program: &Path, error: std::io::Error) -> Error {
    Error::precondition(format!("cannot start {}: {error}", program.display())).with_field("plugin.entry")
}

/// Checks the handshake `line` (the first line read from `lines`, the program's stdout)
/// and the socket, then forwards the rest of stdout.
async fn read_handshake(
    running: &mut Running,
    lines: LineReader<pipe::Receiver>,
    line: std::io::Result<Option<output::Line>>,
    offered: &[Transport],
    owner: u32,
    handle: &Handle,
) -> Result<()> {
    let line = line.map_err(|error| Error::unavailable(format!("cannot read its stdout: {error}")))?;
    let Some(line) = line else {
        // How it ended is added by `explain`, once it has.
        return Err(match running.wait_exit(Duration::from_secs(2)).await {
            Some(_) => Error::unavailable("the program ended before its handshake"),
            None => Error::unavailable("the program closed its stdout before its handshake"),
        });
    };
    if line.cut {
        return Err(Error::precondition(format!(
            "the handshake line is longer than {} bytes; it starts {}",
            output::MAX_LINE,
            handshake::quote(&line.text)
        )));
    }
    let (_, transport) = handshake::check(&line.text, &running.socket, offered)?;
    running.transport = transport;
    handshake::check_socket(&running.socket, owner)?;
    handle.spawn(output::pump(lines, running.plugin.clone(), "stdout", None));
    Ok(())
}

impl Running {
    /// How the program ended, once it has, waiting at most `limit`.
    pub(crate) async fn wait_exit(&self, limit: Duration) -> Option<ExitStatus> {
        let mut exited = self.exited.clone();
        let waited = tokio::time::timeout(limit, exited.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(exit)) => *exit,
            _ => *self.exited.borrow(),
        }
    }

    /// Adds how the program ended (once it has) and its last stderr lines to `error`, whose
    /// message never names the exit itself.
    pub(crate) async fn explain(&self, error: Error) -> Error {
        let exit = self.wait_exit(Duration::from_secs(1)).await;
        self.stderr.settle(Duration::from_millis(250)).await;
        let exit = match exit {
            Some(exit) => format!(" (it {exit})"),
            None => String::new(),
        };
        Error::new(error.code(), format!("{}{exit}{}", error.message(), self.stderr.render()))
    }

    /// Whether the program is still running.
    pub(crate) fn is_running(&self) -> bool {
        self.exited.borrow().is_none()
    }

    /// The program's pid (0 if unknown).
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal` to the program through its pidfd, and to its process group while the
    /// program has not been reaped (so the group id cannot have been reused).
    pub(crate) fn signal(&self, signal: rustix::process::Signal) {
        if !self.is_running() {
            return;
        }
        if let Some(pidfd) = &self.pidfd {
            let _ = rustix::process::pidfd_send_signal(pidfd, signal);
        }
        if let Some(group) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process_group(group, signal);
        }
    }

    /// SIGKILL to the program's group (SIGCONT first, so a stopped program dies too).
    pub(crate) fn kill(&self) {
        self.signal(rustix::process::Signal::CONT);
        self.signal(rustix::process::Signal::KILL);
    }

    /// Waits up to `grace` for the program to exit after it was asked to, then kills its
    /// group. Safe to call more than once.
    pub(crate) async fn stop(&self, grace: Duration) {
        if self.wait_exit(grace).await.is_none() {
            tracing::warn!(plugin = %self.plugin, "the program did not exit within {} ms; killing it", grace.as_millis());
            self.kill();
            self.wait_exit(Duration::from_secs(2)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_start_given_up_before_the_handshake_kills_and_reaps_the_program() {
        let folder = tempfile::tempdir().unwrap();
        let script = folder.path().join("plugin.sh");
        std::fs::write(&script, "#!/bin/sh\necho $$ > pid.tmp && mv pid.tmp pid\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let program = Program {
            plugin: "stuck",
            folder: folder.path(),
            program: script,
            image: None,
            args: &[],
            env: &[],
            transports: &[Transport::Grpc],
        };
        let sockets = Sockets::new("stuck", None).unwrap();
        let private = sockets.plugin.parent().unwrap().to_path_buf();
        let pid_file = folder.path().join("pid");
        let handle = Handle::current();
        let mut start = Box::pin(start(program, sockets, None, Duration::from_secs(30), &handle));
        // The caller gives up once the program runs, long before its start timeout.
        let pid: i32 = loop {
            tokio::select! {
                _ = &mut start => panic!("the program printed no handshake, the start cannot end"),
                _ = tokio::time::sleep(Duration::from_millis(10)) => {
                    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
                        break pid.trim().parse().unwrap();
                    }
                }
            }
        };
        assert!(Path::new(&format!("/proc/{pid}")).exists(), "the program runs");
        drop(start);
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the program is killed and reaped at once");
        assert!(!private.exists(), "its private directory is removed");
    }

    #[test]
    fn a_socket_path_too_long_is_refused_with_its_length() {
        let base = tempfile::tempdir().unwrap();
        let deep = base.path().join("d".repeat(100));
        std::fs::create_dir(&deep).unwrap();
        let error = Sockets::new("fixture", Some(&deep)).err().unwrap();
        assert!(error.message().contains("more than the 107 a Unix socket path may have"), "{error}");
        assert_eq!(std::fs::read_dir(&deep).unwrap().count(), 0, "the directory made for it is removed");
        let sockets =
            Sockets::new("a-plugin-with-a-rather-long-id-of-forty-bytes", Some(base.path())).unwrap();
        let name = sockets.plugin.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("plugbay-a-plugin-with-a-rath-"), "the id is cut to 20 bytes: {name}");
    }
}

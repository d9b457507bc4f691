//! The sandbox of process plugins, on the real kernel: a probe plugin attacks it and every
//! layer is read back from `/proc` and the cgroup files; limits are hit and reported; a
//! host killed or a plugin stopped leaves nothing behind. Every test keeps the canary (a
//! native plugin) answering. Cases of the fault catalogue: C1, C7, C8, D7, F6.

use std::path::{Path, PathBuf};
use std::time::Duration;

use plugbay_core::{Code, Host, HostConfig, SandboxMode, State};
use plugbay_sandbox::probe::{CgroupVersion, Cgroups};
use plugbay_testkit::{PluginsDir, plugbay_binary};
use serde_json::{Value, json};

use crate::process::pid_alive;
use crate::support::{assert_canary_answers, assert_error, host_over, info, json_call};
use crate::util::{eventually, wait_for};

const PATIENCE: Duration = Duration::from_secs(10);

/// The probe (with `extra` in its manifest) and the canary, loaded.
async fn probe_host(extra: &str) -> (PluginsDir, Host) {
    let dir = PluginsDir::new();
    dir.add_sandbox_probe(extra);
    dir.add_canary();
    let host = host_over(&dir).await;
    let listed = info(&host, "probe");
    assert_eq!(listed.state, State::Running, "{:?}", listed.error);
    (dir, host)
}

async fn call(host: &Host, method: &str, payload: Value) -> plugbay_core::Result<Value> {
    host.invoke(json_call("probe@1", method, payload)).await.map(|reply| reply.to_json().unwrap())
}

/// The parent pid of `pid` (field 4 of `/proc/<pid>/stat`).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split_whitespace().nth(1)?.parse().ok()
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| parent_of(*child) == Some(pid))
        .collect()
}

/// Every process in the PID namespace `pid` is in (as the host sees them).
fn in_namespace_of(pid: u32) -> Vec<u32> {
    let Ok(namespace) = std::fs::read_link(format!("/proc/{pid}/ns/pid")) else { return Vec::new() };
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|other| std::fs::read_link(format!("/proc/{other}/ns/pid")).is_ok_and(|ns| ns == namespace))
        .collect()
}

/// The sandbox's init (the instance's pid as the host reports it) and the program (its
/// only child).
fn helper_and_program(host: &Host, id: &str) -> (u32, u32) {
    let pids = info(host, id).pids;
    assert_eq!(pids.len(), 1, "one instance: {pids:?}");
    let children = children_of(pids[0]);
    assert_eq!(children.len(), 1, "the sandbox's init runs the program alone: {children:?}");
    (pids[0], children[0])
}

/// The value of `field` in `/proc/<pid>/status`.
fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

/// The directory of `pid`'s cgroup holding `file` (v2: its one cgroup; v1: the
/// hierarchy of `controller`).
fn cgroup_file(pid: u32, controller: &str, file: &str) -> PathBuf {
    let cgroups = Cgroups::read();
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let (mount, path) = match cgroups.usable.expect("this machine has usable cgroups") {
        CgroupVersion::V2 => {
            let path = membership.lines().find_map(|line| line.strip_prefix("0::")).unwrap().to_owned();
            (cgroups.v2.unwrap().mount, path)
        }
        CgroupVersion::V1 => {
            let mount = cgroups.v1.iter().find(|m| m.controllers.iter().any(|c| c == controller)).unwrap();
            let path = membership
                .lines()
                .find_map(|line| {
                    let mut parts = line.splitn(3, ':');
                    let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
                    names.split(',').any(|name| name == controller).then(|| path.to_owned())
                })
                .unwrap();
            (mount.mount.clone(), path)
        }
    };
    mount.join(path.trim_start_matches('/')).join(file)
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d7_the_probe_is_denied_every_escape_and_each_layer_reads_back() {
    // A host secret in the environment, a file held open without close-on-exec, a TCP port
    // listening on the host's loopback.
    // SAFETY: set before the host starts any thread that reads the environment.
    unsafe { std::env::set_var("PLUGBAY_TEST_SECRET", "hunter2") };
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    let leaked = std::ffi::CString::new(secret_file.path().to_str().unwrap()).unwrap();
    // SAFETY: open without O_CLOEXEC on purpose; the descriptor stays open for the test.
    let leaked_fd = unsafe { libc::open(leaked.as_ptr(), libc::O_RDONLY) };
    assert!(leaked_fd > 2);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (dir, host) = probe_host("[limits]\nmemory_mb = 64\ncpu_percent = 50\npids = 32\n").await;

    let targets = json!({
        "other_folder": dir.folder("text-tools"),
        "host_pid": std::process::id(),
        "tcp_port": listener.local_addr().unwrap().port(),
        "secret_env": "PLUGBAY_TEST_SECRET",
        "leaked_file": secret_file.path(),
    });
    let results = call(&host, "attempts", targets).await.unwrap();
    let sigsys = "signal 31";
    let expected: &[(&str, &[&str])] = &[
        ("read_etc_shadow", &["ENOENT"]),
        ("read_other_plugin", &["ENOENT"]),
        ("write_plugin_folder", &["EROFS", "EACCES"]),
        ("write_root", &["EROFS", "EACCES"]),
        ("write_usr", &["EROFS", "EACCES"]),
        ("write_proc_sysrq", &["EACCES", "EROFS", "EPERM", "ENOENT"]),
        ("signal_host", &["ESRCH"]),
        ("connect_host_tcp", &["ECONNREFUSED", "ENETUNREACH"]),
        ("ptrace", &[sigsys]),
        ("mount", &[sigsys]),
        ("unshare", &[sigsys]),
        ("setns", &[sigsys]),
        ("bpf", &[sigsys]),
        ("keyctl", &[sigsys]),
        ("tiocsti", &["EPERM"]),
        ("tiocsti_high_bits", &["EPERM"]),
        ("socket_vsock", &["EPERM"]),
        ("setuid_binary", &[sigsys, "exit 1", "exit 32", "EACCES", "EPERM"]),
        ("int_0x80", &[sigsys]),
        ("inherited_fd", &["ENOENT"]),
        ("host_env_secret", &["ENOENT"]),
    ];
    for (attempt, allowed) in expected {
        let result = results[attempt].as_str().unwrap_or_else(|| panic!("{attempt} was tried: {results}"));
        assert!(
            allowed.contains(&result),
            "{attempt}: {result} (expected one of {allowed:?}); all: {results}"
        );
    }
    let visible: usize = results["visible_processes"].as_str().unwrap().parse().unwrap();
    assert!(visible <= 3, "the probe sees only its sandbox's processes, not the host's: {visible}");

    // Each layer, read back from the kernel.
    let (helper, program) = helper_and_program(&host, "probe");
    assert_eq!(status_field(program, "Seccomp"), "2", "a seccomp filter");
    assert_eq!(status_field(program, "NoNewPrivs"), "1");
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(program, set), "0000000000000000", "{set}");
    }
    assert!(status_field(program, "Uid").starts_with("65534\t"), "an unprivileged uid outside its namespace");
    for namespace in ["user", "mnt", "pid", "net", "ipc", "uts"] {
        let own = std::fs::read_link(format!("/proc/self/ns/{namespace}")).unwrap();
        let its = std::fs::read_link(format!("/proc/{program}/ns/{namespace}")).unwrap();
        assert_ne!(own, its, "the {namespace} namespace is the program's own");
    }
    assert_eq!(status_field(program, "NSpid").split_whitespace().last(), Some("2"), "pid 2 inside");
    assert_eq!(status_field(helper, "NSpid").split_whitespace().last(), Some("1"), "its init is pid 1");
    match Cgroups::read().usable.unwrap() {
        CgroupVersion::V1 => {
            assert_eq!(read_trimmed(&cgroup_file(program, "memory", "memory.limit_in_bytes")), "67108864");
            assert_eq!(read_trimmed(&cgroup_file(program, "cpu", "cpu.cfs_quota_us")), "50000");
            assert_eq!(read_trimmed(&cgroup_file(program, "cpu", "cpu.cfs_period_us")), "100000");
        }
        CgroupVersion::V2 => {
            assert_eq!(read_trimmed(&cgroup_file(program, "memory", "memory.max")), "67108864");
            assert_eq!(read_trimmed(&cgroup_file(program, "cpu", "cpu.max")), "50000 100000");
        }
    }
    assert_eq!(read_trimmed(&cgroup_file(program, "pids", "pids.max")), "32");
    let limits = std::fs::read_to_string(format!("/proc/{program}/limits")).unwrap();
    for (name, value) in
        [("Max core file size", "0"), ("Max open files", "1024"), ("Max file size", "1073741824")]
    {
        let line = limits.lines().find(|line| line.starts_with(name)).unwrap();
        let values: Vec<&str> = line[name.len()..].split_whitespace().collect();
        assert_eq!(&values[..2], &[value, value], "{name}: {line}");
    }
    for entry in std::fs::read_dir(format!("/proc/{program}/fd")).unwrap().flatten() {
        let fd: u32 = entry.file_name().to_str().unwrap().parse().unwrap();
        let target = std::fs::read_link(entry.path()).unwrap().to_string_lossy().into_owned();
        if fd > 2 {
            assert!(
                ["socket:", "pipe:", "anon_inode:"].iter().any(|kind| target.starts_with(kind)),
                "fd {fd} of the program is {target}: only 0-2 and its own sockets and pipes are open"
            );
        }
    }
    let layers = info(&host, "probe").sandbox.unwrap().layers;
    assert_eq!(layers.len(), 8, "{layers:?}");
    assert_canary_answers(&host).await;
    drop(listener);
    // SAFETY: the descriptor opened above.
    unsafe { libc::close(leaked_fd) };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_memory_bomb_is_killed_by_its_memory_limit_and_the_report_says_so() {
    let (_dir, host) = probe_host("[limits]\nmemory_mb = 64\n[restart]\nbackoff_ms = 10\n").await;
    let error = call(&host, "hog_memory", json!(512)).await.unwrap_err();
    assert_error(&error, Code::Unavailable, &["killed: memory limit 64 MiB reached"]);
    let crashed = || host.crashes(Some("probe"));
    let crashes = eventually(PATIENCE, "a crash report", crashed, |crashes| !crashes.is_empty());
    assert!(crashes[0].reason.contains("memory limit 64 MiB reached"), "{:?}", crashes[0]);
    assert_canary_answers(&host).await;
    // Restarted by its policy, it answers again.
    let answer = async || call(&host, "pid", json!(null)).await.ok();
    wait_for(PATIENCE, "the probe to answer after its restart", answer, Option::is_some).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c8_fork_file_and_disk_bombs_hit_their_limits() {
    let (_dir, host) = probe_host("[limits]\nmemory_mb = 256\npids = 24\n").await;
    let forks = call(&host, "fork_bomb", json!(null)).await.unwrap();
    assert_eq!(forks["error"], "EAGAIN", "{forks}");
    assert!(forks["forked"].as_u64().unwrap() < 24, "{forks}");
    let files = call(&host, "open_files", json!(null)).await.unwrap();
    assert_eq!(files["error"], "EMFILE", "{files}");
    assert!(files["opened"].as_u64().unwrap() < 1024, "{files}");
    let disk = call(&host, "fill_tmp", json!(null)).await.unwrap();
    assert_eq!(disk["error"], "ENOSPC", "{disk}");
    assert!(
        (60..=64).contains(&disk["written_mib"].as_u64().unwrap()),
        "the private /tmp holds 64 MiB: {disk}"
    );
    // None of it hurt the plugin or the host.
    assert!(call(&host, "pid", json!(null)).await.is_ok());
    assert_canary_answers(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c8_a_cpu_hog_gets_its_cpu_percent_of_a_core() {
    let (_dir, host) = probe_host("[limits]\ncpu_percent = 30\ntimeout_ms = 10000\n").await;
    let cpu_ms = call(&host, "burn", json!(2000)).await.unwrap().as_u64().unwrap();
    let percent = cpu_ms as f64 / 20.0;
    assert!((20.0..=40.0).contains(&percent), "30% of a core, within 10 points: got {percent:.1}%");
    assert_canary_answers(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_forked_setsid_daemon_dies_with_its_plugin() {
    let (_dir, host) = probe_host("").await;
    let (helper, _) = helper_and_program(&host, "probe");
    assert_eq!(call(&host, "daemonize", json!(null)).await.unwrap(), json!(true));
    let sandboxed = in_namespace_of(helper);
    assert_eq!(sandboxed.len(), 3, "init, the program and the daemon: {sandboxed:?}");
    host.stop("probe").await.unwrap();
    let alive = || sandboxed.iter().filter(|pid| pid_alive(**pid)).count();
    eventually(PATIENCE, "every process of the sandbox to die", alive, |alive| *alive == 0);
    assert_canary_answers(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_a_sandboxed_program_killed_is_reported_and_restarted() {
    let (_dir, host) = probe_host("[restart]\nbackoff_ms = 10\n").await;
    let (helper, program) = helper_and_program(&host, "probe");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(program as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let crashed = || host.crashes(Some("probe"));
    let crashes = eventually(PATIENCE, "a crash report", crashed, |crashes| !crashes.is_empty());
    assert!(crashes[0].reason.contains("SIGKILL"), "the program's own signal is reported: {:?}", crashes[0]);
    let restarted = || info(&host, "probe").pids;
    eventually(PATIENCE, "a new sandbox", restarted, |pids| pids.len() == 1 && pids[0] != helper);
    assert!(!pid_alive(helper), "the old sandbox's init is gone");
    assert_canary_answers(&host).await;
}

#[test]
fn f6_host_killed_leaves_nothing_and_the_next_host_removes_its_cgroups() {
    let dir = PluginsDir::new();
    dir.add_sandbox_probe("");
    // The host (a child `plugbay call`) blocks in a call; the plugin's sandbox is its child.
    let mut host = std::process::Command::new(plugbay_binary())
        .args(["call", "probe@1", "burn", "60000", "--plugins"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let sandbox = || {
        let helpers: Vec<u32> = children_of(host.id())
            .into_iter()
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
                    != std::fs::read_link("/proc/self/ns/pid").ok()
            })
            .collect();
        helpers.first().map(|helper| in_namespace_of(*helper))
    };
    let processes = eventually(Duration::from_secs(20), "the plugin's sandbox", sandbox, |p| {
        p.as_ref().is_some_and(|p| p.len() == 2)
    })
    .unwrap();
    let host_pid = host.id();
    host.kill().unwrap();
    host.wait().unwrap();
    let alive = || processes.iter().filter(|pid| pid_alive(**pid)).count();
    eventually(PATIENCE, "every process of the sandbox to die with its host", alive, |alive| *alive == 0);
    // What the dead host could not remove, the next one does.
    let leftovers = || -> Vec<PathBuf> {
        let cgroups = Cgroups::read();
        let mounts: Vec<PathBuf> = cgroups
            .v1
            .iter()
            .map(|m| m.mount.clone())
            .chain(cgroups.v2.iter().map(|m| m.mount.clone()))
            .collect();
        mounts
            .iter()
            .filter_map(|mount| std::fs::read_dir(mount.join("plugbay")).ok())
            .flat_map(|entries| entries.flatten())
            .map(|entry| entry.path())
            .filter(|path| path.file_name().unwrap().to_string_lossy().starts_with(&format!("{host_pid}-")))
            .collect()
    };
    if Cgroups::read().usable.is_some() {
        assert!(!leftovers().is_empty(), "the killed host's cgroups are still there");
        let empty = PluginsDir::new();
        let status = std::process::Command::new(plugbay_binary())
            .args(["list", "--plugins"])
            .arg(empty.path())
            .output()
            .unwrap();
        assert!(status.status.success() || status.status.code() == Some(0) || !status.stderr.is_empty());
        assert_eq!(leftovers(), Vec::<PathBuf>::new(), "the next host removed them");
    }
}

/// `plugbay list --json` over `dir` run as the unprivileged `nobody`, with `--sandbox mode`:
/// the listing, and what the host logged.
fn list_as_nobody(dir: &PluginsDir, mode: &str) -> (Value, String) {
    use std::os::unix::process::CommandExt;
    let output = std::process::Command::new(plugbay_binary())
        .args(["list", "--json", "--sandbox", mode, "--plugins"])
        .arg(dir.path())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{log}");
    (serde_json::from_slice(&output.stdout).unwrap(), log)
}

#[test]
fn a_host_running_as_nobody_sandboxes_in_a_user_namespace_and_names_what_it_cannot_build() {
    use std::os::unix::fs::PermissionsExt;
    let dir = PluginsDir::new();
    dir.add_sandbox_probe("");
    // Readable by nobody: the folders the test made are root's.
    for path in [dir.path().to_path_buf(), dir.folder("probe")] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let setting = |file: &str| std::fs::read_to_string(file).ok().map(|text| text.trim().to_owned());
    if setting("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0")
        || setting("/proc/sys/user/max_user_namespaces").as_deref() == Some("0")
    {
        eprintln!("skipped: this kernel forbids user namespaces to users other than root");
        return;
    }
    // Required: nobody cannot make cgroups, so the plugin does not load, and the error
    // names the layer and the setting that relaxes it.
    let (listed, _) = list_as_nobody(&dir, "required");
    let probe = &listed.as_array().unwrap()[0];
    assert_eq!(probe["state"], "failed", "{probe}");
    let message = probe["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("cgroups layer cannot be built") && message.contains("best-effort"),
        "{message}"
    );
    // Best-effort: it runs in every other layer, its own user namespace first.
    let (listed, log) = list_as_nobody(&dir, "best-effort");
    let probe = &listed.as_array().unwrap()[0];
    assert_eq!(probe["state"], "running", "{probe}");
    let layers: Vec<&str> =
        probe["sandbox"]["layers"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert_eq!(
        layers,
        [
            "user-namespace",
            "mount-namespace",
            "pid-namespace",
            "network-namespace",
            "ipc-uts-namespaces",
            "seccomp",
            "landlock"
        ]
    );
    let missing = probe["sandbox"]["missing"].as_array().unwrap();
    assert!(missing[0].as_str().unwrap().starts_with("cgroups: "), "{missing:?}");
    // The warning the sandbox_degraded alert carries, logged with the plugin's id.
    assert!(log.contains("started without the sandbox layers: cgroups: "), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_off_runs_the_program_as_the_host_sees_it() {
    let dir = PluginsDir::new();
    dir.add_sandbox_probe("");
    dir.add_canary();
    let host = Host::build(HostConfig::with_plugin_dir(dir.path()).with_sandbox(SandboxMode::Off)).unwrap();
    host.load_all().await;
    let sandbox = info(&host, "probe").sandbox.unwrap();
    assert_eq!((sandbox.mode, sandbox.layers.len()), (SandboxMode::Off, 0));
    // Unsandboxed, the probe sees the host's processes and its file system.
    let pid: u32 = call(&host, "pid", json!(null)).await.unwrap().as_u64().unwrap() as u32;
    assert_eq!(info(&host, "probe").pids, vec![pid], "the program itself, as the host sees it");
    assert_canary_answers(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_system_call_is_named_in_the_crash_report() {
    let (_dir, host) = probe_host("[restart]\npolicy = \"never\"\n").await;
    let error = call(&host, "ptrace_self", json!(null)).await.unwrap_err();
    // The kernel's log names the call when the host may read it (root here).
    assert_error(&error, Code::Unavailable, &["SIGSYS", "the sandbox forbids the system call ptrace (101)"]);
    assert_canary_answers(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_call_outside_the_allow_list_is_eperm_unless_the_manifest_grants_it() {
    let io_uring_setup = libc::SYS_io_uring_setup;
    let (_dir, host) = probe_host("").await;
    assert_eq!(call(&host, "syscall", json!(io_uring_setup)).await.unwrap(), "EPERM");
    let (_dir, host) = probe_host("[permissions]\nsyscalls = [\"io_uring_setup\"]\n").await;
    let granted = call(&host, "syscall", json!(io_uring_setup)).await.unwrap();
    assert_ne!(granted, "EPERM", "granted, the kernel itself answers (here: bad arguments)");
    assert_canary_answers(&host).await;
    // A call the sandbox kills cannot be granted: the manifest is refused, naming it.
    let dir = PluginsDir::new();
    dir.add_sandbox_probe("[permissions]\nsyscalls = [\"ptrace\"]\n");
    let host = host_over(&dir).await;
    crate::support::assert_failed(
        &host,
        "probe",
        Code::InvalidArgument,
        &["permissions.syscalls", "ptrace cannot be granted"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_stay_in_the_plugin_folder_and_must_be_usable_by_the_sandbox() {
    use std::os::unix::fs::PermissionsExt;
    // A symbolic link out of the folder is refused, as `..` is.
    let dir = PluginsDir::new();
    let folder = dir.add_sandbox_probe("[permissions]\nread = [\"etc\"]\n");
    std::os::unix::fs::symlink("/etc", folder.join("etc")).unwrap();
    let host = host_over(&dir).await;
    crate::support::assert_failed(
        &host,
        "probe",
        Code::PermissionDenied,
        &["permissions.read[0]", "leads out of the plugin folder"],
    );
    // A write grant the sandbox's user cannot write is named with the fix.
    let dir = PluginsDir::new();
    let folder = dir.add_sandbox_probe("[permissions]\nwrite = [\"out\"]\n");
    std::fs::create_dir(folder.join("out")).unwrap();
    std::fs::set_permissions(folder.join("out"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let host = host_over(&dir).await;
    crate::support::assert_failed(
        &host,
        "probe",
        Code::FailedPrecondition,
        &["permissions.write[0]", "chown 65534"],
    );
    // Handed to that user, it loads.
    rustix::fs::chown(folder.join("out"), Some(rustix::fs::Uid::from_raw(65534)), None).unwrap();
    host.load_folder(&folder).await.unwrap();
    assert_eq!(info(&host, "probe").state, State::Running);
    // A host path to show every program must exist.
    let config = HostConfig::with_plugin_dir(dir.path()).with_sandbox_read(vec!["/no/such/toolchain".into()]);
    let host = Host::build(config).unwrap();
    host.load_all().await;
    crate::support::assert_failed(
        &host,
        "probe",
        Code::FailedPrecondition,
        &["/no/such/toolchain", "does not exist"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_granted_the_network_shares_the_hosts_and_keeps_every_other_layer() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (dir, host) = probe_host("[permissions]\nnetwork = true\n").await;
    let targets = json!({
        "other_folder": dir.folder("text-tools"),
        "host_pid": std::process::id(),
        "tcp_port": listener.local_addr().unwrap().port(),
        "secret_env": "PLUGBAY_TEST_SECRET",
        "leaked_file": "/nonexistent",
    });
    let results = call(&host, "attempts", targets).await.unwrap();
    assert_eq!(results["connect_host_tcp"], "ok", "the host's loopback is reachable: {results}");
    assert_eq!(results["read_etc_shadow"], "ENOENT", "the rest stays fenced: {results}");
    assert_eq!(results["ptrace"], "signal 31", "{results}");
    let layers = info(&host, "probe").sandbox.unwrap().layers;
    assert!(!layers.iter().any(|layer| layer == "network-namespace"), "{layers:?}");
    assert_eq!(layers.len(), 7, "every other layer: {layers:?}");
    let (_, program) = helper_and_program(&host, "probe");
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(
        std::fs::read_link(format!("/proc/{program}/ns/net")).unwrap(),
        own,
        "the host's network namespace"
    );
    assert_canary_answers(&host).await;
}

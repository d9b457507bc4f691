//! A program started in the sandbox, read back from the kernel and from inside.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use plugbay_sandbox::spawn::Launch;
use plugbay_sandbox::{Layer, Limits, Sandboxing, Spec};

/// Runs `script` with `sh` in a sandbox with every layer; returns its stdout and stderr.
fn run(script: &str, limits: Limits) -> (String, String, Option<i32>) {
    let sandboxing = Sandboxing::new();
    let folder = tempfile::tempdir().unwrap();
    let private = tempfile::tempdir().unwrap();
    let spec = Spec {
        name: format!("test-{}", std::process::id()),
        layers: Layer::ALL.to_vec(),
        folder: folder.path().to_path_buf(),
        private_dir: private.path().to_path_buf(),
        read: vec![],
        write: vec![],
        shared: vec![],
        syscalls: vec![],
        network: false,
        limits,
    };
    let prepared = sandboxing.prepare(&spec).unwrap();
    let args = [OsStr::new("-c"), OsStr::new(script)];
    let (launch, output) =
        Launch::new(Path::new("/bin/sh"), args, [(OsStr::new("A"), OsStr::new("b"))], folder.path()).unwrap();
    let started = launch.start_contained(prepared).unwrap();
    let read = |fd: OwnedFd| {
        let mut text = String::new();
        std::fs::File::from(fd).read_to_string(&mut text).unwrap();
        text
    };
    let stdout = read(output.stdout);
    let stderr = read(output.stderr);
    plugbay_sandbox::child::reap(&started.pidfd, Duration::from_secs(10)).unwrap();
    let status = started.contained.as_ref().unwrap().program_status();
    (stdout, stderr, status)
}

#[test]
fn a_contained_program_sees_only_its_sandbox() {
    let (stdout, stderr, status) = run(
        "echo pid $$; grep -E '^(Uid|CapEff|NoNewPrivs|Seccomp):' /proc/self/status; ls /; cat /etc/shadow; hostname; exit 3",
        Limits::default(),
    );
    eprintln!("{stdout}\n--\n{stderr}");
    assert!(stdout.contains("pid 2"), "{stdout}");
    assert!(stdout.contains("NoNewPrivs:\t1"), "{stdout}");
    assert!(stdout.contains("Seccomp:\t2"), "{stdout}");
    assert!(stdout.contains("CapEff:\t0000000000000000"), "{stdout}");
    assert!(stderr.contains("/etc/shadow"), "{stderr}");
    assert_eq!(status.map(|s| (s >> 8) & 0xff), Some(3));
}

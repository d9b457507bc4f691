//! Dev-only helpers for plugbay's test suite and benchmarks: they build real test plugins
//! (Rust cdylibs with cargo, C libraries with the system compiler, deliberately broken
//! artifacts) into temporary plugin folders. Nothing binary is checked in.
//!
//! Rust plugins and the `plugbay` binary are built in the workspace's own target directory,
//! by the same cargo command and with the same features ([`SUITE_FEATURES`]) as the test
//! build, so the dependencies are compiled once for both (`scripts/test.sh` passes the same
//! features to clippy, nextest and the doctests). They are rebuilt only when a source file
//! is newer than the library. Cargo releases its lock before it runs tests, so a test that
//! builds them does not wait on the build that runs it.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

use plugbay_core::platform;

pub mod wasm;

/// The workspace root (where `Cargo.toml` with `[workspace]` is).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the workspace root exists")
}

/// The target directory cargo builds the workspace into: `CARGO_TARGET_DIR` when it is
/// set, else `<workspace>/target`. A relative `CARGO_TARGET_DIR` is taken from the workspace
/// root, where the testkit runs cargo (and where `scripts/test.sh` and `cargo xtask` run).
pub fn target_dir() -> PathBuf {
    target_dir_from(&workspace_root(), std::env::var_os("CARGO_TARGET_DIR").as_deref())
}

/// [`target_dir`] for a workspace at `root` and the value of `CARGO_TARGET_DIR` (`None`
/// when unset; an empty value counts as unset, as for cargo).
fn target_dir_from(root: &Path, cargo_target_dir: Option<&std::ffi::OsStr>) -> PathBuf {
    match cargo_target_dir {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// `include/` with `plugbay.h`.
pub fn include_dir() -> PathBuf {
    workspace_root().join("include")
}

/// The Rust plugins the testkit can build: (package, folder relative to the workspace).
const RUST_PLUGINS: &[(&str, &str)] = &[
    ("native-fixture", "crates/plugbay-testkit/fixtures/native-fixture"),
    ("text-tools", "examples/plugins/text-tools"),
    ("kv-store", "examples/plugins/kv-store"),
];

/// Sources whose change means the Rust plugins must be rebuilt.
const RUST_SOURCES: &[&str] =
    &["crates/plugbay-abi", "crates/plugbay-sdk", "crates/plugbay-proto", "proto", "Cargo.lock"];

/// The Rust fixture built as a process plugin (the same `Fixture` type).
const PROCESS_FIXTURE: &str = "process-fixture";

/// Builds (if needed) and returns the process-plugin build of the Rust fixture.
pub fn process_fixture() -> PathBuf {
    process_program("native-fixture", PROCESS_FIXTURE)
}

/// The sandbox probe, a process plugin that attacks its own sandbox.
const SANDBOX_PROBE: &str = "sandbox-probe";

/// Builds (if needed) and returns the sandbox probe (`native-fixture`'s
/// `src/sandbox_probe.rs`): a process plugin whose methods try to escape its sandbox.
pub fn sandbox_probe() -> PathBuf {
    process_program("native-fixture", SANDBOX_PROBE)
}

/// The `text-tools` example built as a process plugin (the same `TextTools` type as its
/// native library; `--features text-tools/process`).
const TEXT_TOOLS_PROCESS: &str = "text-tools-process";

/// Builds (if needed) and returns the process-plugin build of the `text-tools` example.
pub fn text_tools_process() -> PathBuf {
    process_program("text-tools", TEXT_TOOLS_PROCESS)
}

/// The `kv-store` example built as a process plugin (`--features kv-store/process`).
const KV_STORE_PROCESS: &str = "kv-store-process";

/// Builds (if needed) and returns the process-plugin build of the `kv-store` example.
pub fn kv_store_process() -> PathBuf {
    process_program("kv-store", KV_STORE_PROCESS)
}

/// Builds (if needed) the Rust plugin `package` and returns the path of its process program
/// `name`.
fn process_program(package: &str, name: &str) -> PathBuf {
    rust_plugin(package);
    process_programs_dir().join(name)
}

/// A manifest for a process plugin running `entry` (a program in the plugin folder).
pub fn process_manifest(id: &str, entry: &str, provides: &[(&str, &[&str])], extra: &str) -> String {
    native_manifest(id, entry, provides).replace("runtime = \"native\"", "runtime = \"process\"") + extra
}

fn newest_mtime(path: &Path) -> SystemTime {
    let Ok(metadata) = std::fs::metadata(path) else { return SystemTime::UNIX_EPOCH };
    let own = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    if !metadata.is_dir() {
        return own;
    }
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_name() != "target")
        .map(|entry| newest_mtime(&entry.path()))
        .fold(own, SystemTime::max)
}

/// Builds (if needed) and returns the path of a Rust plugin library by package name:
/// `native-fixture`, `text-tools` or `kv-store`.
///
/// # Panics
/// If the package is unknown or cargo fails (the test cannot run without it).
pub fn rust_plugin(package: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    assert!(RUST_PLUGINS.iter().any(|(name, _)| *name == package), "unknown test plugin {package}");
    let dir = BUILT.get_or_init(build_rust_plugins);
    dir.join(platform::cargo_cdylib_file_name(package))
}

/// Test plugins are built like the code that uses them: optimised for benchmarks (where the
/// testkit itself is built without debug assertions), with the dev profile for tests.
const RELEASE: bool = !cfg!(debug_assertions);

/// The features the test suite is built with: the process builds of the Rust plugins. The
/// same list is `SUITE_FEATURES` in `scripts/lib.sh` (a test checks that they agree): one
/// feature set for every cargo command of the suite means one build of the dependencies.
pub const SUITE_FEATURES: &[&str] = &["native-fixture/process", "text-tools/process", "kv-store/process"];

/// `<target>/debug` or `<target>/release` (see [`target_dir`]), where the suite's Rust
/// plugins and binaries are.
fn suite_output_dir() -> PathBuf {
    target_dir().join(if RELEASE { "release" } else { "debug" })
}

/// Benchmarks link the Rust process plugins statically (`-C target-feature=+crt-static`),
/// as docs/process-protocol.md recommends: a program that needs no dynamic loader starts
/// about 0.3 ms sooner on the benchmark machine. Tests use the ordinary build.
const STATIC_PROGRAMS: bool = RELEASE && cfg!(all(target_os = "linux", target_env = "gnu"));

/// Where the suite's process plugin programs are: the statically linked build, made for
/// the host target explicitly (so the flag reaches the programs and not the build's own
/// tools), lands in `<target>/<host>/release`; otherwise beside the libraries.
fn process_programs_dir() -> PathBuf {
    if !STATIC_PROGRAMS {
        return suite_output_dir();
    }
    target_dir().join(host_target()).join("release")
}

/// The target triple rustc builds for by default (`rustc -vV`, line `host:`).
fn host_target() -> &'static str {
    static TARGET: OnceLock<String> = OnceLock::new();
    TARGET.get_or_init(|| {
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
        let output = Command::new(rustc).arg("-vV").output().expect("rustc runs");
        let text = String::from_utf8_lossy(&output.stdout);
        text.lines()
            .find_map(|line| line.strip_prefix("host: "))
            .expect("`rustc -vV` names the host")
            .to_owned()
    })
}

/// Sets `flag` for a cargo command on top of the caller's own rustc flags (cargo reads
/// `CARGO_ENCODED_RUSTFLAGS` first, then `RUSTFLAGS`).
fn add_rustflag(command: &mut Command, flag: &str) {
    match std::env::var("CARGO_ENCODED_RUSTFLAGS") {
        Ok(flags) if !flags.is_empty() => {
            command.env("CARGO_ENCODED_RUSTFLAGS", format!("{flags}\x1f{}", flag.replace(' ', "\x1f")))
        }
        _ => command.env("RUSTFLAGS", format!("{} {flag}", std::env::var("RUSTFLAGS").unwrap_or_default())),
    };
}

fn build_rust_plugins() -> PathBuf {
    let root = workspace_root();
    let out = suite_output_dir();
    let mut outputs: Vec<PathBuf> =
        RUST_PLUGINS.iter().map(|(name, _)| out.join(platform::cargo_cdylib_file_name(name))).collect();
    let programs = process_programs_dir();
    outputs.extend(
        [PROCESS_FIXTURE, SANDBOX_PROBE, TEXT_TOOLS_PROCESS, KV_STORE_PROCESS]
            .map(|name| programs.join(name)),
    );
    let sources = RUST_PLUGINS
        .iter()
        .map(|(_, dir)| root.join(dir))
        .chain(RUST_SOURCES.iter().map(|dir| root.join(dir)))
        .map(|path| newest_mtime(&path))
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let fresh = outputs.iter().all(|output| {
        std::fs::metadata(output).and_then(|m| m.modified()).is_ok_and(|built| built >= sources)
    });
    if !fresh {
        build_suite();
    }
    out
}

/// Runs the cargo build that makes the suite's Rust plugins and the `plugbay` binary.
fn build_suite() {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    // `cargo build` of the suite's features; with `plugins`, of the Rust plugin packages.
    let build = |plugins: bool| {
        let mut command = Command::new(&cargo);
        command.current_dir(&root).args(["build", "--quiet", "--features", &SUITE_FEATURES.join(",")]);
        if plugins {
            for (name, _) in RUST_PLUGINS {
                command.arg("-p").arg(name);
            }
        }
        command
    };
    let run = |mut command: Command, what: &str| {
        let status = command.status().expect("cargo runs");
        assert!(status.success(), "building {what} failed: {status}");
    };
    if !RELEASE {
        // Tests: the targets `cargo nextest run --workspace` builds (all but the examples),
        // with its features, so this build and the test build share every compiled
        // dependency.
        let mut command = build(false);
        command.args(["--workspace", "--lib", "--bins", "--tests"]);
        return run(command, "the test plugins");
    }
    // Benchmarks: only what they run, optimised.
    let mut command = build(true);
    command.args(["--release", "-p", "plugbay"]);
    if STATIC_PROGRAMS {
        // The plugin libraries and the `plugbay` binary; the process programs are built
        // statically below.
        command.args(["--lib", "--bin", "plugbay"]);
    }
    run(command, "the benchmark plugins");
    if STATIC_PROGRAMS {
        let mut command = build(true);
        command.args(["--release", "--bins", "--target", host_target()]);
        add_rustflag(&mut command, "-C target-feature=+crt-static");
        run(command, "the statically linked process plugins");
    }
}

/// Builds everything the suite builds on demand (the Rust test plugins and the `plugbay`
/// binary), for a test script to run before the tests.
pub fn prebuild() {
    rust_plugin("native-fixture");
    plugbay_binary();
}

/// The `plugbay` command-line binary's file name.
const PLUGBAY_BINARY: &str = if cfg!(windows) { "plugbay.exe" } else { "plugbay" };

/// Builds (if needed) the `plugbay` command-line binary and returns its path, for tests
/// that need the host in a child process (a crash must not take the test runner down) or
/// that check the CLI itself.
///
/// # Panics
/// If cargo fails.
pub fn plugbay_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let binary = suite_output_dir().join(PLUGBAY_BINARY);
            let root = workspace_root();
            let sources = PLUGBAY_SOURCES
                .iter()
                .map(|path| newest_mtime(&root.join(path)))
                .max()
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let built = std::fs::metadata(&binary).and_then(|m| m.modified());
            if !built.is_ok_and(|built| built >= sources) {
                build_suite();
            }
            binary
        })
        .clone()
}

/// Sources whose change means the `plugbay` binary must be rebuilt (checked here, so that
/// each test process does not run cargo only to hear that nothing changed).
const PLUGBAY_SOURCES: &[&str] = &[
    "crates/plugbay",
    "crates/plugbay-core",
    "crates/plugbay-sandbox",
    "crates/plugbay-proto",
    "crates/plugbay-abi",
    "proto",
    "wit",
    "Cargo.lock",
    "Cargo.toml",
];

/// Compiles C source into a shared library at `out` with the system compiler (`$CC`, else
/// `cc`), against `include/plugbay.h`, with extra flags such as `-DTABLE_ABI=2`.
///
/// # Panics
/// If the compiler is missing or fails (the message says how to install one).
pub fn compile_c(source: &Path, out: &Path, flags: &[&str]) {
    let library = ["-shared", "-fPIC", "-fvisibility=hidden"];
    run_c_compiler(source, out, &[&library[..], flags].concat());
}

/// Compiles C source into a program at `out` (a process plugin), as [`compile_c`] does a
/// library.
///
/// # Panics
/// As [`compile_c`].
pub fn compile_c_program(source: &Path, out: &Path, flags: &[&str]) {
    run_c_compiler(source, out, flags);
}

fn run_c_compiler(source: &Path, out: &Path, flags: &[&str]) {
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let output = Command::new(&compiler)
        .args(["-std=c11", "-Wall", "-Werror", "-O1"])
        .arg("-I")
        .arg(include_dir())
        .args(flags)
        .arg("-o")
        .arg(out)
        .arg(source)
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run {compiler} ({error}); install a C compiler: apt-get install -y gcc")
        });
    assert!(
        output.status.success(),
        "{compiler} failed on {}: {}",
        source.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The C fixture's source (`fixtures/c/fixture.c`), with its knobs documented inside.
pub fn c_fixture_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/c/fixture.c")
}

/// The Python example process plugin (`examples/plugins/py-wordfreq`), relative to the
/// workspace.
pub const PYTHON_EXAMPLE: &str = "examples/plugins/py-wordfreq";

/// What to run when python3 or its gRPC packages are missing.
const PYTHON_GRPC_INSTALL: &str = "python3 -m pip install grpcio grpcio-tools grpcio-health-checking";

/// The folders a sandboxed Python program needs beside the system's (`/usr`): where the
/// `python3` on PATH and its prefix live when that is elsewhere (a pyenv, a venv, `/opt`);
/// empty for the system's Python. For `HostConfig::sandbox_read` and `--sandbox-read`.
pub fn python_sandbox_read() -> Vec<PathBuf> {
    // The launcher the plugin's `env python3` finds on PATH (a pyenv shim, a venv's
    // bin/python3): the folder above its bin/. Looked up here, not by Python, which may run
    // with a PATH its launcher changed.
    let launcher = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).map(|dir| dir.join("python3")).find(|file| file.is_file())
    });
    let mut roots: Vec<PathBuf> =
        launcher.iter().filter_map(|file| Some(file.parent()?.parent()?.to_path_buf())).collect();
    let script = "import sys\nprint(sys.prefix)\nprint(sys.base_prefix)";
    if let Ok(output) = std::process::Command::new("python3").args(["-c", script]).output() {
        roots.extend(String::from_utf8_lossy(&output.stdout).lines().map(PathBuf::from));
    }
    let system = |path: &Path| path == Path::new("/") || path.starts_with("/usr") || !path.is_absolute();
    let mut kept: Vec<PathBuf> = Vec::new();
    for root in roots.into_iter().filter(|root| !system(root)) {
        let root = root.canonicalize().unwrap_or(root);
        if !kept.iter().any(|other| root.starts_with(other)) {
            kept.retain(|other| !other.starts_with(&root));
            kept.push(root);
        }
    }
    kept
}

/// Generates the Python gRPC stubs of `proto/plugbay/plugin/v1/plugin.proto` into `out`
/// (`out/plugbay/plugin/v1/plugin_pb2.py` and `plugin_pb2_grpc.py`) with
/// `python3 -m grpc_tools.protoc`, as `cargo xtask plugins` does.
///
/// # Panics
/// If python3, grpcio, grpcio-tools or grpcio-health-checking is missing (the message
/// says how to install them), or protoc fails.
pub fn generate_python_stubs(out: &Path) {
    let check = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools, grpc_health.v1"])
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run python3 ({error}); the Python example needs it, with: {PYTHON_GRPC_INSTALL}")
        });
    assert!(
        check.status.success(),
        "python3 lacks the gRPC packages the Python example needs; install them with \
         `{PYTHON_GRPC_INSTALL}` (scripts/test.sh does): {}",
        String::from_utf8_lossy(&check.stderr).trim()
    );
    std::fs::create_dir_all(out).expect("create the stubs folder");
    let proto = workspace_root().join("proto");
    let output = Command::new("python3")
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto)
        .arg(format!("--python_out={}", out.display()))
        .arg(format!("--grpc_python_out={}", out.display()))
        .arg(proto.join("plugbay/plugin/v1/plugin.proto"))
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "grpc_tools.protoc failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A manifest for a native plugin.
pub fn native_manifest(id: &str, entry: &str, provides: &[(&str, &[&str])]) -> String {
    let mut text =
        format!("[plugin]\nid = \"{id}\"\nversion = \"0.1.0\"\nruntime = \"native\"\nentry = \"{entry}\"\n");
    text.push_str("\n[provides]\n");
    for (capability, methods) in provides {
        let methods: Vec<String> = methods.iter().map(|m| format!("\"{m}\"")).collect();
        text.push_str(&format!("\"{capability}\" = [{}]\n", methods.join(", ")));
    }
    text
}

/// The `[permissions]` of the test fixtures (the Rust fixture, native and process, and
/// the wasm test guest): they call and publish through the host API to test it, so they
/// may call anything and publish on any topic. A plugin's default is neither; the tests
/// of those permissions write manifests without this.
pub const HOST_API_GRANTS: &str = "\n[permissions]\ninvoke = [\"*\"]\npublish = [\"*\"]\n";

/// The Rust fixture's `[provides]`: the methods it describes itself with.
pub const FIXTURE_METHODS: &[&str] = native_fixture::METHODS;

/// Makes a file executable (mode 0755).
pub fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A temporary plugins folder; removed on drop.
pub struct PluginsDir {
    dir: tempfile::TempDir,
}

impl Default for PluginsDir {
    fn default() -> Self {
        PluginsDir::new()
    }
}

impl PluginsDir {
    /// An empty plugins folder.
    pub fn new() -> PluginsDir {
        PluginsDir { dir: tempfile::Builder::new().prefix("plugbay-test-").tempdir().expect("a temp dir") }
    }

    /// The folder's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The folder of plugin `name` (created).
    pub fn folder(&self, name: &str) -> PathBuf {
        let folder = self.path().join(name);
        std::fs::create_dir_all(&folder).expect("create the plugin folder");
        folder
    }

    /// Writes `plugins/<name>/plugin.toml` with `manifest`.
    pub fn write_manifest(&self, name: &str, manifest: impl AsRef<[u8]>) -> PathBuf {
        let folder = self.folder(name);
        std::fs::write(folder.join("plugin.toml"), manifest).expect("write the manifest");
        folder
    }

    /// Writes an artifact file into `plugins/<name>/`.
    pub fn write_file(&self, name: &str, file: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.folder(name).join(file);
        std::fs::write(&path, bytes).expect("write the artifact");
        path
    }

    /// Adds a Rust plugin built by the testkit (`native-fixture`, `text-tools`,
    /// `kv-store`) under folder `name`, with `manifest` (or the plugin's own manifest
    /// when `None`: the example's `plugin.toml`, or the fixture's generated one).
    pub fn add_rust(&self, package: &str, name: &str, manifest: Option<&str>) -> PathBuf {
        let library = rust_plugin(package);
        let entry = platform::cargo_cdylib_entry(package);
        let manifest = match manifest {
            Some(manifest) => manifest.to_owned(),
            None if package == "native-fixture" => {
                native_manifest("fixture", &entry, &[("fixture@1", FIXTURE_METHODS)])
                    + "\n[subscribes]\ntopics = [\"fixture.*\"]\n"
                    + HOST_API_GRANTS
            }
            None => {
                let folder = RUST_PLUGINS.iter().find(|(p, _)| *p == package).expect("known").1;
                std::fs::read_to_string(workspace_root().join(folder).join("plugin.toml"))
                    .expect("example manifest")
            }
        };
        let folder = self.write_manifest(name, manifest);
        std::fs::copy(&library, folder.join(platform::native_library_file_name(&entry)))
            .expect("copy the library");
        folder
    }

    /// The Rust fixture as plugin `fixture` (its describe says id `fixture`).
    pub fn add_fixture(&self) -> PathBuf {
        self.add_rust("native-fixture", "fixture", None)
    }

    /// The native Rust fixture as `fixture`, with `extra` appended to its manifest (e.g. a
    /// `[limits]` table).
    pub fn add_fixture_with(&self, extra: &str) -> PathBuf {
        let folder = self.add_fixture();
        let manifest = folder.join("plugin.toml");
        let text = std::fs::read_to_string(&manifest).expect("the fixture manifest");
        std::fs::write(&manifest, format!("{text}\n{extra}")).expect("extend the fixture manifest");
        folder
    }

    /// The Rust fixture as process plugin `fixture` (same methods as the native one), with
    /// `extra` appended to its manifest (e.g. a `[process]` table).
    pub fn add_process_fixture(&self, extra: &str) -> PathBuf {
        let extra = format!("{extra}{HOST_API_GRANTS}");
        let manifest =
            process_manifest("fixture", "process-fixture", &[("fixture@1", FIXTURE_METHODS)], &extra);
        let folder = self.write_manifest("fixture", manifest);
        std::fs::copy(process_fixture(), folder.join("process-fixture")).expect("copy the fixture program");
        folder
    }

    /// The sandbox probe as process plugin `probe` (capability `probe@1`), with `extra`
    /// appended to its manifest (e.g. `[limits]`).
    pub fn add_sandbox_probe(&self, extra: &str) -> PathBuf {
        let manifest =
            process_manifest("probe", "sandbox-probe", &[("probe@1", native_fixture::PROBE_METHODS)], extra);
        let folder = self.write_manifest("probe", manifest);
        std::fs::copy(sandbox_probe(), folder.join("sandbox-probe")).expect("copy the sandbox probe");
        folder
    }

    /// The process fixture run through a shell wrapper: `script` is the wrapper's body
    /// (it runs in the plugin folder; `./process-fixture` is the fixture program). For
    /// tests that need to record, flood or ignore signals around the real plugin.
    pub fn add_wrapped_process_fixture(&self, extra: &str, script: &str) -> PathBuf {
        let folder = self.add_process_fixture(extra);
        let wrapper = folder.join("wrapper.sh");
        std::fs::write(&wrapper, format!("#!/bin/sh\n{script}\n")).expect("write the wrapper");
        set_executable(&wrapper);
        let manifest = std::fs::read_to_string(folder.join("plugin.toml")).expect("the fixture manifest");
        std::fs::write(folder.join("plugin.toml"), manifest.replace("\"process-fixture\"", "\"wrapper.sh\""))
            .expect("write the manifest");
        folder
    }

    /// A process plugin `name` whose program is the shell `script` (made executable),
    /// providing `misbehave@1` = [`go`], for handshake and hygiene faults.
    pub fn add_script_plugin(&self, name: &str, script: &str, extra: &str) -> PathBuf {
        let folder = self
            .write_manifest(name, process_manifest(name, "plugin.sh", &[("misbehave@1", &["go"])], extra));
        let path = folder.join("plugin.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("write the script");
        set_executable(&path);
        folder
    }

    /// The Python example process plugin as `py-wordfreq` (capability `text.stats@1`):
    /// its `plugin.toml` and `plugin.py`, with the gRPC stubs generated into `gen/`. The
    /// program writes its pid to `pid` in the folder when it starts.
    ///
    /// # Panics
    /// If python3 or its gRPC packages are missing (see [`generate_python_stubs`]).
    pub fn add_python_example(&self) -> PathBuf {
        let example = workspace_root().join(PYTHON_EXAMPLE);
        let folder = self.folder("py-wordfreq");
        for file in ["plugin.toml", "plugin.py"] {
            std::fs::copy(example.join(file), folder.join(file))
                .unwrap_or_else(|error| panic!("copy {file} of the Python example: {error}"));
        }
        set_executable(&folder.join("plugin.py"));
        generate_python_stubs(&folder.join("gen"));
        folder
    }

    /// The `text-tools` example built as a process plugin, in folder `text-tools`: its
    /// `plugin-process.toml` as `plugin.toml` (same id and `[provides]` as the native build,
    /// `runtime = "process"`) and the `text-tools-process` program.
    pub fn add_text_tools_process(&self) -> PathBuf {
        let example = workspace_root().join("examples/plugins/text-tools");
        let manifest = std::fs::read_to_string(example.join("plugin-process.toml"))
            .expect("the text-tools example's plugin-process.toml");
        let folder = self.write_manifest("text-tools", manifest);
        std::fs::copy(text_tools_process(), folder.join(TEXT_TOOLS_PROCESS))
            .expect("copy the text-tools-process program");
        folder
    }

    /// The `kv-store` example as a process plugin (its `plugin-process.toml`, with `extra`
    /// appended).
    pub fn add_kv_store_process(&self, extra: &str) -> PathBuf {
        let example = workspace_root().join("examples/plugins/kv-store");
        let manifest = std::fs::read_to_string(example.join("plugin-process.toml"))
            .expect("the kv-store example's plugin-process.toml");
        let folder = self.write_manifest("kv-store", format!("{manifest}\n{extra}"));
        std::fs::copy(kv_store_process(), folder.join(KV_STORE_PROCESS))
            .expect("copy the kv-store-process program");
        folder
    }

    /// The `text-tools` example: the healthy canary beside broken plugins.
    pub fn add_canary(&self) -> PathBuf {
        self.add_rust("text-tools", "text-tools", None)
    }

    /// Compiles the C fixture with `flags` into plugin `name` (id and describe id `name`,
    /// capability `cfix@1` with `echo` and `count`).
    pub fn add_c_fixture(&self, name: &str, flags: &[&str]) -> PathBuf {
        let folder =
            self.write_manifest(name, native_manifest(name, "libcfix", &[("cfix@1", &["echo", "count"])]));
        let id_flag = format!("-DPLUGIN_ID=\"{name}\"");
        let mut all: Vec<&str> = vec![&id_flag];
        all.extend_from_slice(flags);
        compile_c(&c_fixture_source(), &folder.join(platform::native_library_file_name("libcfix")), &all);
        folder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_script_builds_with_the_same_features() {
        let script = std::fs::read_to_string(workspace_root().join("scripts/lib.sh")).unwrap();
        let line = format!("SUITE_FEATURES=\"{}\"", SUITE_FEATURES.join(","));
        assert!(script.lines().any(|l| l == line), "scripts/lib.sh must set {line}");
    }

    #[test]
    fn the_target_dir_follows_cargo_target_dir() {
        let root = Path::new("/work/ws");
        assert_eq!(target_dir_from(root, None), Path::new("/work/ws/target"));
        assert_eq!(target_dir_from(root, Some("".as_ref())), Path::new("/work/ws/target"));
        assert_eq!(target_dir_from(root, Some("/cache/build".as_ref())), Path::new("/cache/build"));
        assert_eq!(target_dir_from(root, Some("out/tgt".as_ref())), Path::new("/work/ws/out/tgt"));
    }
}

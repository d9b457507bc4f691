//! `cargo xtask`: project automation that needs more than one cargo command.
//!
//! ```text
//! cargo xtask plugins [--debug] [--out DIR]
//! cargo xtask testkit
//! ```
//!
//! `testkit` builds the test plugins and the `plugbay` binary the integration tests use
//! (into `<target>/debug`, with the test build's features), so the first test does not spend its
//! time limit compiling. `<target>` is `CARGO_TARGET_DIR` when set (relative to the
//! workspace root), else `<workspace>/target`.
//!
//! `plugins` builds the example plugins under `examples/plugins/` and assembles a plugin
//! folder for each, `<out>/<id>/` holding `plugin.toml` and the library named as the
//! manifest's `entry` plus the platform suffix (`libtext_tools.so` on Linux). The Rust
//! examples are built with cargo (release unless `--debug`), the C examples with the system
//! C compiler (`$CC`, default `cc`): `c-checksum` into a library, `c-rot13` into a program
//! (a process plugin: its folder holds the program named by its `entry`). The C wasm
//! example (`text-tools-wasm`) is built with Debian's clang + lld + wasi-libc into a core
//! module that `wit-component` turns into a component of `wit/plugbay.wit` (`plugin.wasm`;
//! skipped with a warning when that toolchain is missing). The default `<out>` is
//! `<target>/plugins`, the folder the CLI examples pass to `--plugins`.
//!
//! The Python example is a process plugin: its folder holds `plugin.toml`, the program
//! (`plugin.py`) and, in `gen/`, the gRPC stubs that `python3 -m grpc_tools.protoc`
//! generates from `proto/` (they are not checked in). When `python3` cannot import `grpc`,
//! `grpc_tools` and `grpc_health`, it is skipped with a warning, and the others are built.
//!
//! The Rust examples that come both ways (`text-tools`, `kv-store`) are also built as process plugins:
//! the program from `--features process`, assembled in a second tree, `<out>-process/<id>/`
//! (default `<target>/plugins-process`), with the example's `plugin-process.toml`
//! as `plugin.toml`. A second tree, because the native and the process build share one
//! plugin id, and one host refuses two plugins with the same id.
//!
//! A folder is assembled beside `<out>` and then renamed into place, replacing the old
//! one, so a host scanning `<out>` never sees a half-written plugin, and a library a
//! running host has mapped is replaced by a new file instead of being overwritten.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use plugbay_core::platform::{cargo_cdylib_file_name, native_library_file_name};

/// What the tool prints for `--help` and after a usage error.
const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  plugins [--debug] [--out DIR]
      Build the example plugins and assemble DIR/<id>/{plugin.toml, library or program}, and
      DIR/py-wordfreq/{plugin.toml, plugin.py, gen/} when python3 has grpcio and
      grpcio-tools (else it warns and skips it). The Rust examples built both ways
      also go, as process plugins, to DIR-process/<id>/{plugin.toml, program}.
      --debug    build the Rust plugins in the dev profile (and the C one with -O0 -g)
      --out DIR  where to put the plugin folders (default: <target>/plugins, <target> being
                 $CARGO_TARGET_DIR, else <workspace>/target;
                 the process builds go to DIR-process)
  testkit
      Build the test plugins and the plugbay binary the integration tests use
      (<target>/debug, with the suite's features), before the tests run.
";

/// The Rust example plugins: the cargo package and its folder under the workspace.
const RUST_PLUGINS: &[(&str, &str)] =
    &[("text-tools", "examples/plugins/text-tools"), ("kv-store", "examples/plugins/kv-store")];

/// The C example plugins: the folder under the workspace and the source file in it.
const C_PLUGINS: &[(&str, &str)] = &[("examples/plugins/c-checksum", "checksum.c")];
/// The C example process plugins: (folder, source). The program is the manifest's `entry`.
const C_PROCESS_PLUGINS: &[(&str, &str)] = &[("examples/plugins/c-rot13", "rot13.c")];
/// The C examples compiled to WebAssembly (Debian's clang + lld + wasi-libc) and wrapped
/// into components of `wit/plugbay.wit`: (folder, source). The artifact is the manifest's
/// `entry` (`plugin.wasm`).
const WASM_C_PLUGINS: &[(&str, &str)] = &[("examples/plugins/text-tools-wasm", "text_tools.c")];
/// What to run when the wasm C toolchain is missing.
const WASM_TOOLCHAIN_INSTALL: &str = "apt-get install clang lld wasi-libc libclang-rt-dev-wasm32";

/// The Python example plugins (process plugins): the folder under the workspace, whose
/// `plugin.toml` names the program as its `entry`.
const PYTHON_PLUGINS: &[&str] = &["examples/plugins/py-wordfreq"];

/// The proto file the Python stubs are generated from, under `<workspace>/proto`.
const PLUGIN_PROTO: &str = "plugbay/plugin/v1/plugin.proto";

/// How to get what the Python plugins need.
const PYTHON_GRPC_INSTALL: &str = "python3 -m pip install grpcio grpcio-tools grpcio-health-checking";

/// Errors are messages for a person; `main` prints them.
type Result<T, E = String> = std::result::Result<T, E>;

fn main() -> ExitCode {
    match run(env::args_os().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Dispatches the command line (without the program name).
fn run(args: Vec<OsString>) -> Result<()> {
    let mut args = args.into_iter();
    let command = args.next().map(|arg| arg.to_string_lossy().into_owned());
    match command.as_deref() {
        Some("plugins") => plugins(PluginsOptions::parse(args)?),
        Some("testkit") => {
            // Builds what the test suite's plugins and CLI tests need, outside any test's
            // time limit (the suite rebuilds only what changed afterwards).
            plugbay_testkit::prebuild();
            Ok(())
        }
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other:?}\n\n{USAGE}")),
        None => Err(format!("no command given\n\n{USAGE}")),
    }
}

/// The options of `cargo xtask plugins`.
#[derive(Debug)]
struct PluginsOptions {
    /// Build in the dev profile instead of release.
    debug: bool,
    /// Where the plugin folders go; `None` for the default.
    out: Option<PathBuf>,
}

impl PluginsOptions {
    fn parse(mut args: impl Iterator<Item = OsString>) -> Result<PluginsOptions> {
        let mut options = PluginsOptions { debug: false, out: None };
        while let Some(arg) = args.next() {
            match arg.to_str() {
                Some("--debug") => options.debug = true,
                Some("--out") => {
                    let dir = args.next().ok_or_else(|| format!("--out needs a directory\n\n{USAGE}"))?;
                    options.out = Some(PathBuf::from(dir));
                }
                Some(arg) if arg.starts_with("--out=") => {
                    options.out = Some(PathBuf::from(&arg["--out=".len()..]))
                }
                Some("-h" | "--help") => {
                    print!("{USAGE}");
                    std::process::exit(0);
                }
                _ => return Err(format!("unexpected argument {arg:?} to `plugins`\n\n{USAGE}")),
            }
        }
        Ok(options)
    }
}

/// The workspace root: xtask lives in `<workspace>/xtask`.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits inside the workspace").to_path_buf()
}

/// `cargo xtask plugins`.
fn plugins(options: PluginsOptions) -> Result<()> {
    let root = workspace_root();
    let cwd = env::current_dir().map_err(|error| format!("cannot read the current directory: {error}"))?;
    let out = match options.out {
        Some(out) => cwd.join(out),
        None => plugbay_testkit::target_dir().join("plugins"),
    };
    let profile = if options.debug { "debug" } else { "release" };

    // Look for the C compiler before the long cargo build, so a missing one fails fast.
    let cc = CCompiler::from_env()?;
    // A Python without grpc only means the Python plugins are skipped.
    let python = Python::check();

    let artifacts = build_rust_plugins(&root, options.debug)?;
    let staging = Staging::create(&out)?;
    let mut built = Vec::new();
    for (package, dir) in RUST_PLUGINS {
        let manifest = Manifest::read(&root.join(dir), "native")?;
        let artifact = artifacts
            .iter()
            .find(|path| path.file_name().is_some_and(|name| *name == *cargo_cdylib_file_name(package)))
            .ok_or_else(|| {
                format!("cargo reported no library {} for {package}", cargo_cdylib_file_name(package))
            })?;
        let folder = staging.folder(&manifest)?;
        copy(artifact, &folder.join(manifest.artifact_file_name()))?;
        built.push((staging.install(manifest, folder)?, profile));
    }
    for (dir, source) in C_PLUGINS {
        let dir = root.join(dir);
        let manifest = Manifest::read(&dir, "native")?;
        let folder = staging.folder(&manifest)?;
        cc.compile_plugin(
            &root.join("include"),
            &dir.join(source),
            &folder.join(manifest.artifact_file_name()),
            options.debug,
        )?;
        built.push((staging.install(manifest, folder)?, profile));
    }
    for (dir, source) in C_PROCESS_PLUGINS {
        let dir = root.join(dir);
        let manifest = Manifest::read(&dir, "process")?;
        let folder = staging.folder(&manifest)?;
        cc.compile_program(&dir.join(source), &folder.join(manifest.artifact_file_name()), options.debug)?;
        built.push((staging.install(manifest, folder)?, profile));
    }
    let mut skipped = Vec::new();
    for (dir, source) in WASM_C_PLUGINS {
        let manifest = Manifest::read(&root.join(dir), "wasm")?;
        if let Err(reason) = wasm_toolchain() {
            skipped.push((manifest.id, format!("{reason}; install it with `{WASM_TOOLCHAIN_INSTALL}`")));
            continue;
        }
        let folder = staging.folder(&manifest)?;
        let component = plugbay_testkit::wasm::component_from_c(&manifest.dir.join(source), &[]);
        let artifact = folder.join(manifest.artifact_file_name());
        fs::write(&artifact, component)
            .map_err(|error| format!("cannot write {}: {error}", artifact.display()))?;
        built.push((staging.install(manifest, folder)?, "wasm"));
    }
    for dir in PYTHON_PLUGINS {
        let manifest = Manifest::read(&root.join(dir), "process")?;
        match &python {
            Ok(python) => {
                let folder = staging.folder(&manifest)?;
                let program = folder.join(manifest.artifact_file_name());
                copy(&manifest.dir.join(&manifest.entry), &program)?;
                set_executable(&program)?;
                python.generate_stubs(&root.join("proto"), &folder.join("gen"))?;
                built.push((staging.install(manifest, folder)?, "python"));
            }
            Err(reason) => {
                skipped.push((manifest.id, format!("{reason}; install them with `{PYTHON_GRPC_INSTALL}`")))
            }
        }
    }
    drop(staging);

    for ((manifest, folder), how) in built {
        let artifact = folder.join(manifest.artifact_file_name());
        println!("built {} {} ({how}): {}", manifest.id, manifest.version, shown(&artifact, &cwd).display());
    }
    println!("plugin folders are in {}", shown(&out, &cwd).display());
    for (id, reason) in skipped {
        eprintln!("xtask: warning: skipped {id}: {reason}");
    }

    process_builds(&root, &cwd, &process_out(&out), options.debug)
}

/// Whether clang can build a wasm32-wasi reactor against wasi-libc.
fn wasm_toolchain() -> Result<()> {
    let probe = env::temp_dir().join(format!("plugbay-xtask-wasm-probe-{}.c", std::process::id()));
    fs::write(&probe, "int probe(void) { return 0; }\n")
        .map_err(|error| format!("cannot write a probe: {error}"))?;
    let status = Command::new("clang")
        .args(["--target=wasm32-wasi", "--sysroot=/usr", "-mexec-model=reactor", "-o", "/dev/null"])
        .arg(&probe)
        .stderr(Stdio::null())
        .status();
    let _ = fs::remove_file(&probe);
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(_) => {
            Err("clang cannot build wasm32-wasi modules (lld, wasi-libc or the wasm32 builtins are missing)"
                .into())
        }
        Err(error) => Err(format!("clang was not found ({error})")),
    }
}

/// `path` relative to `cwd` when it lies below it, for shorter output.
fn shown<'a>(path: &'a Path, cwd: &Path) -> &'a Path {
    path.strip_prefix(cwd).unwrap_or(path)
}

/// Builds the Rust plugins with cargo and returns the files cargo reports for their
/// `cdylib` targets.
fn build_rust_plugins(root: &Path, debug: bool) -> Result<Vec<PathBuf>> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command.current_dir(root).args(["build", "--message-format=json-render-diagnostics"]);
    if !debug {
        command.arg("--release");
    }
    for (package, _) in RUST_PLUGINS {
        command.args(["-p", package]);
    }
    // Diagnostics and progress go to our stderr as usual; stdout carries JSON messages.
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run {}: {error}", cargo.to_string_lossy()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut artifacts = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|error| format!("cannot read cargo's output: {error}"))?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        let is_cdylib =
            message["target"]["kind"].as_array().is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"));
        if message["reason"] == "compiler-artifact" && is_cdylib {
            let files = message["filenames"].as_array().into_iter().flatten();
            artifacts.extend(files.filter_map(|file| file.as_str()).map(PathBuf::from));
        }
    }
    let status = child.wait().map_err(|error| format!("cannot wait for cargo: {error}"))?;
    if !status.success() {
        return Err(format!("cargo build of the Rust plugins failed ({status})"));
    }
    Ok(artifacts)
}

/// The parts of a `plugin.toml` the assembly needs (validated by the host's parser).
#[derive(Debug)]
struct Manifest {
    /// The example's folder, which holds the `plugin.toml`.
    dir: PathBuf,
    /// `[plugin].id`, which names the assembled folder.
    id: String,
    /// `[plugin].version`, for the report.
    version: String,
    /// `[plugin].entry`: the library's file name without the platform suffix (native), or
    /// the program's file name (process).
    entry: String,
    /// `[plugin].runtime`: `native` or `process`.
    runtime: String,
}

impl Manifest {
    /// Reads `dir/plugin.toml`, which must be for the `runtime` xtask builds it as.
    fn read(dir: &Path, runtime: &str) -> Result<Manifest> {
        Manifest::read_file(dir, "plugin.toml", runtime)
    }

    /// Reads and fully validates the manifest `file` in `dir` with the host's own parser,
    /// so an example never ships a manifest the host would refuse.
    fn read_file(dir: &Path, file: &str, runtime: &str) -> Result<Manifest> {
        let path = dir.join(file);
        let bytes = fs::read(&path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let manifest =
            plugbay_core::Manifest::parse(&bytes, &path, None).map_err(|error| error.to_string())?;
        let declared = manifest.plugin.runtime.as_str();
        if declared != runtime {
            return Err(format!(
                "{}: [plugin].runtime is {declared:?}; xtask assembles this example as a {runtime} plugin",
                path.display()
            ));
        }
        let entry = manifest.plugin.entry;
        if entry.contains(['/', '\\']) || entry.starts_with('.') {
            return Err(format!("{}: [plugin].entry {entry:?} must be a plain file name", path.display()));
        }
        Ok(Manifest {
            dir: dir.to_path_buf(),
            id: manifest.plugin.id,
            version: manifest.plugin.version.to_string(),
            entry,
            runtime: declared.to_owned(),
        })
    }

    /// The artifact's file name in the plugin folder: for a native plugin the entry plus the
    /// platform suffix, for a process plugin the entry itself (the program).
    fn artifact_file_name(&self) -> String {
        if self.runtime == "native" { native_library_file_name(&self.entry) } else { self.entry.clone() }
    }
}

/// A scratch directory beside the output directory (same file system, so renames are
/// atomic) where plugin folders are assembled before they replace the old ones.
#[derive(Debug)]
struct Staging {
    /// The scratch directory.
    dir: PathBuf,
    /// The output directory the folders move into.
    out: PathBuf,
}

impl Staging {
    fn create(out: &Path) -> Result<Staging> {
        fs::create_dir_all(out).map_err(|error| format!("cannot create {}: {error}", out.display()))?;
        let name = out.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let parent = out.parent().unwrap_or(out);
        let dir = parent.join(format!(".{name}.xtask-{}", std::process::id()));
        // A leftover from a killed run with the same pid is not worth keeping.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
        Ok(Staging { dir, out: out.to_path_buf() })
    }

    /// A fresh folder for `manifest`'s plugin, holding a copy of its `plugin.toml`.
    fn folder(&self, manifest: &Manifest) -> Result<PathBuf> {
        let folder = self.dir.join(&manifest.id);
        fs::create_dir(&folder).map_err(|error| format!("cannot create {}: {error}", folder.display()))?;
        copy(&manifest.dir.join("plugin.toml"), &folder.join("plugin.toml"))?;
        Ok(folder)
    }

    /// Moves a finished folder to `<out>/<id>`, replacing what was there, and returns
    /// the manifest with the folder's final path.
    fn install(&self, manifest: Manifest, folder: PathBuf) -> Result<(Manifest, PathBuf)> {
        let target = self.out.join(&manifest.id);
        let old = self.dir.join(format!("{}.old", manifest.id));
        let had_old = match fs::rename(&target, &old) {
            Ok(()) => true,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
            Err(error) => return Err(format!("cannot move {} aside: {error}", target.display())),
        };
        if let Err(error) = fs::rename(&folder, &target) {
            if had_old {
                let _ = fs::rename(&old, &target);
            }
            return Err(format!("cannot move {} to {}: {error}", folder.display(), target.display()));
        }
        if had_old {
            let _ = fs::remove_dir_all(&old);
        }
        Ok((manifest, target))
    }
}

impl Drop for Staging {
    /// Removes the scratch directory, also when the assembly failed half-way.
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Copies a file, with an error that names both ends.
fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .map(drop)
        .map_err(|error| format!("cannot copy {} to {}: {error}", from.display(), to.display()))
}

/// Makes a program executable (mode 0755); a no-op where there are no such modes.
fn set_executable(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))
            .map_err(|error| format!("cannot make {} executable: {error}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// The Rust examples that are also built as process plugins, from the same source: the
/// cargo package, its folder under the workspace, the manifest of the process build in that
/// folder, and the program (a `[[bin]]` of the package that needs its `process` feature).
const RUST_PROCESS_BUILDS: &[ProcessBuild] = &[
    ProcessBuild {
        package: "text-tools",
        dir: "examples/plugins/text-tools",
        manifest: "plugin-process.toml",
        program: "text-tools-process",
    },
    ProcessBuild {
        package: "kv-store",
        dir: "examples/plugins/kv-store",
        manifest: "plugin-process.toml",
        program: "kv-store-process",
    },
];

/// One Rust example built as a process plugin: see [`RUST_PROCESS_BUILDS`].
#[derive(Debug)]
struct ProcessBuild {
    package: &'static str,
    dir: &'static str,
    manifest: &'static str,
    program: &'static str,
}

/// Where the process builds go for plugin folders in `out`: its sibling `<out>-process`
/// (`target/plugins-process` for the default `target/plugins`).
fn process_out(out: &Path) -> PathBuf {
    let name = out.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    out.with_file_name(format!("{name}-process"))
}

/// Builds the programs of [`RUST_PROCESS_BUILDS`] and assembles `<out>/<id>/` for each:
/// the example's process manifest as `plugin.toml`, and the program named as its `entry`.
fn process_builds(root: &Path, cwd: &Path, out: &Path, debug: bool) -> Result<()> {
    let profile = if debug { "debug" } else { "release" };
    let mut programs = Vec::new();
    for build in RUST_PROCESS_BUILDS {
        programs.push(build_process_program(root, build, debug)?);
    }
    let staging = Staging::create(out)?;
    let mut built = Vec::new();
    for (build, program) in RUST_PROCESS_BUILDS.iter().zip(&programs) {
        let manifest = Manifest::read_file(&root.join(build.dir), build.manifest, "process")?;
        let folder = staging.dir.join(&manifest.id);
        fs::create_dir(&folder).map_err(|error| format!("cannot create {}: {error}", folder.display()))?;
        copy(&manifest.dir.join(build.manifest), &folder.join("plugin.toml"))?;
        let target = folder.join(manifest.artifact_file_name());
        copy(program, &target)?;
        set_executable(&target)?;
        built.push(staging.install(manifest, folder)?);
    }
    drop(staging);

    for (manifest, folder) in built {
        let program = folder.join(manifest.artifact_file_name());
        println!(
            "built {} {} ({profile}, process): {}",
            manifest.id,
            manifest.version,
            shown(&program, cwd).display()
        );
    }
    println!("process plugin folders are in {}", shown(out, cwd).display());
    Ok(())
}

/// Builds one process program with cargo
/// (`cargo build -p <package> --features process --bin <program>`) and returns the
/// executable cargo reports.
fn build_process_program(root: &Path, build: &ProcessBuild, debug: bool) -> Result<PathBuf> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command.current_dir(root).args(["build", "--message-format=json-render-diagnostics"]);
    if !debug {
        command.arg("--release");
    }
    command.args(["-p", build.package, "--features", "process", "--bin", build.program]);
    // Diagnostics and progress go to our stderr as usual; stdout carries JSON messages.
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run {}: {error}", cargo.to_string_lossy()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut executable = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|error| format!("cannot read cargo's output: {error}"))?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if message["reason"] == "compiler-artifact" && message["target"]["name"] == build.program {
            executable = message["executable"].as_str().map(PathBuf::from).or(executable);
        }
    }
    let status = child.wait().map_err(|error| format!("cannot wait for cargo: {error}"))?;
    if !status.success() {
        return Err(format!("cargo build of the process program {} failed ({status})", build.program));
    }
    executable.ok_or_else(|| format!("cargo reported no program {} for {}", build.package, build.program))
}

/// `python3` (the one on `PATH`, which is also what runs the plugin, through its
/// `#!/usr/bin/env python3` line) with the gRPC packages the Python plugins need.
#[derive(Debug)]
struct Python;

impl Python {
    /// What the Python plugins import: the runtime and health service, and the stub
    /// generator for the build.
    const IMPORTS: &str = "import grpc, grpc_tools, grpc_health.v1";

    /// `Ok` when python3 can import the packages, else why not (for a warning).
    fn check() -> Result<Python> {
        match Command::new("python3").args(["-c", Python::IMPORTS]).output() {
            Ok(output) if output.status.success() => Ok(Python),
            Ok(output) => {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let last = stderr.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("no output");
                Err(format!("python3 cannot import grpc, grpc_tools and grpc_health ({})", last.trim()))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Err("python3 was not found; it runs the plugin, with grpcio".to_owned())
            }
            Err(error) => Err(format!("cannot run python3: {error}")),
        }
    }

    /// Generates `plugin_pb2.py` and `plugin_pb2_grpc.py` from `<proto>/plugbay/plugin/v1/`
    /// into `<out>/plugbay/plugin/v1/` (the import path the generated code uses).
    fn generate_stubs(&self, proto: &Path, out: &Path) -> Result<()> {
        fs::create_dir_all(out).map_err(|error| format!("cannot create {}: {error}", out.display()))?;
        let mut python_out = OsString::from("--python_out=");
        python_out.push(out);
        let mut grpc_out = OsString::from("--grpc_python_out=");
        grpc_out.push(out);
        let output = Command::new("python3")
            .args(["-m", "grpc_tools.protoc", "-I"])
            .arg(proto)
            .arg(python_out)
            .arg(grpc_out)
            .arg(proto.join(PLUGIN_PROTO))
            .output()
            .map_err(|error| format!("cannot run python3: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "python3 -m grpc_tools.protoc failed on {} ({}): {}",
                proto.join(PLUGIN_PROTO).display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(())
    }
}

/// The C compiler: `$CC` (which may carry arguments, e.g. `ccache gcc`) or `cc`.
#[derive(Debug)]
struct CCompiler {
    program: String,
    args: Vec<String>,
}

impl CCompiler {
    fn from_env() -> Result<CCompiler> {
        let cc = env::var("CC").ok().filter(|cc| !cc.trim().is_empty()).unwrap_or_else(|| "cc".to_owned());
        let mut words = cc.split_whitespace().map(str::to_owned);
        let program = words.next().expect("CC is not blank");
        let compiler = CCompiler { program, args: words.collect() };
        match Command::new(&compiler.program).args(&compiler.args).arg("--version").output() {
            Ok(_) => Ok(compiler),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(format!(
                "the C compiler `{cc}` was not found; it builds the C example plugin. Install one \
                 (`apt-get install -y gcc` on Debian/Ubuntu) or point CC at one"
            )),
            Err(error) => Err(format!("cannot run the C compiler `{cc}`: {error}")),
        }
    }

    /// Compiles one C source file into a shared library that exports only what the
    /// source marks `PLUGBAY_EXPORT`.
    fn compile_plugin(&self, include: &Path, source: &Path, output: &Path, debug: bool) -> Result<()> {
        self.compile(source, output, debug, |command| {
            command.args(["-shared", "-fPIC", "-fvisibility=hidden"]).arg("-I").arg(include);
        })
    }

    /// Compiles one C source file into a program (a process plugin).
    fn compile_program(&self, source: &Path, output: &Path, debug: bool) -> Result<()> {
        self.compile(source, output, debug, |_| {})
    }

    fn compile(
        &self,
        source: &Path,
        output: &Path,
        debug: bool,
        kind: impl FnOnce(&mut Command),
    ) -> Result<()> {
        let mut command = Command::new(&self.program);
        command.args(&self.args).args(["-std=c11", "-Wall", "-Wextra", "-Werror"]);
        command.args(if debug { &["-O0", "-g"][..] } else { &["-O2"][..] });
        kind(&mut command);
        command.arg("-o").arg(output).arg(source);
        let status = command.status().map_err(|error| format!("cannot run {}: {error}", self.program))?;
        if !status.success() {
            return Err(format!("{} failed to compile {} ({status})", self.program, source.display()));
        }
        Ok(())
    }
}

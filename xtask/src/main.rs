//! `cargo xtask`: project automation that needs more than one cargo command.
//!
//! ```text
//! cargo xtask plugins [--debug] [--out DIR]
//! ```
//!
//! `plugins` builds the example plugins under `examples/plugins/` and assembles a plugin
//! folder for each, `<out>/<id>/` holding `plugin.toml` and the library named as the
//! manifest's `entry` plus the platform suffix (`libtext_tools.so` on Linux). The Rust
//! examples are built with cargo (release unless `--debug`), the C example with the system
//! C compiler (`$CC`, default `cc`). The default `<out>` is `<workspace>/target/plugins`,
//! the folder the CLI examples pass to `--plugins`.
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
      Build the example plugins and assemble DIR/<id>/{plugin.toml, library}.
      --debug    build the Rust plugins in the dev profile (and the C one with -O0 -g)
      --out DIR  where to put the plugin folders (default: <workspace>/target/plugins)
";

/// The Rust example plugins: the cargo package and its folder under the workspace.
const RUST_PLUGINS: &[(&str, &str)] =
    &[("text-tools", "examples/plugins/text-tools"), ("kv-store", "examples/plugins/kv-store")];

/// The C example plugins: the folder under the workspace and the source file in it.
const C_PLUGINS: &[(&str, &str)] = &[("examples/plugins/c-checksum", "checksum.c")];

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
        None => root.join("target").join("plugins"),
    };
    let profile = if options.debug { "debug" } else { "release" };

    // Look for the C compiler before the long cargo build, so a missing one fails fast.
    let cc = CCompiler::from_env()?;

    let artifacts = build_rust_plugins(&root, options.debug)?;
    let staging = Staging::create(&out)?;
    let mut built = Vec::new();
    for (package, dir) in RUST_PLUGINS {
        let manifest = Manifest::read(&root.join(dir))?;
        let artifact = artifacts
            .iter()
            .find(|path| path.file_name().is_some_and(|name| *name == *cargo_cdylib_file_name(package)))
            .ok_or_else(|| {
                format!("cargo reported no library {} for {package}", cargo_cdylib_file_name(package))
            })?;
        let folder = staging.folder(&manifest)?;
        copy(artifact, &folder.join(manifest.library_file_name()))?;
        built.push(staging.install(manifest, folder)?);
    }
    for (dir, source) in C_PLUGINS {
        let dir = root.join(dir);
        let manifest = Manifest::read(&dir)?;
        let folder = staging.folder(&manifest)?;
        cc.compile_plugin(
            &root.join("include"),
            &dir.join(source),
            &folder.join(manifest.library_file_name()),
            options.debug,
        )?;
        built.push(staging.install(manifest, folder)?);
    }
    drop(staging);

    for (manifest, folder) in built {
        let library = folder.join(manifest.library_file_name());
        println!(
            "built {} {} ({profile}): {}",
            manifest.id,
            manifest.version,
            shown(&library, &cwd).display()
        );
    }
    println!("plugin folders are in {}", shown(&out, &cwd).display());
    Ok(())
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

/// The parts of a `plugin.toml` the assembly needs, read as plain TOML (the host's
/// manifest module does the full validation when it loads the plugin).
#[derive(Debug)]
struct Manifest {
    /// The example's folder, which holds the `plugin.toml`.
    dir: PathBuf,
    /// `[plugin].id`, which names the assembled folder.
    id: String,
    /// `[plugin].version`, for the report.
    version: String,
    /// `[plugin].entry`: the library's file name without the platform suffix.
    entry: String,
}

impl Manifest {
    fn path(dir: &Path) -> PathBuf {
        dir.join("plugin.toml")
    }

    fn read(dir: &Path) -> Result<Manifest> {
        let path = Manifest::path(dir);
        let text =
            fs::read_to_string(&path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let table: toml::Table = toml::from_str(&text)
            .map_err(|error| format!("{} is not valid TOML: {error}", path.display()))?;
        let field = |name: &str| -> Result<String> {
            table
                .get("plugin")
                .and_then(|plugin| plugin.get(name))
                .and_then(toml::Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("{}: [plugin].{name} is missing or not a string", path.display()))
        };
        let (id, version, entry, runtime) =
            (field("id")?, field("version")?, field("entry")?, field("runtime")?);
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(format!("{}: [plugin].id {id:?} must be made of [a-z0-9-]", path.display()));
        }
        if runtime != "native" {
            return Err(format!(
                "{}: [plugin].runtime is {runtime:?}; xtask assembles native plugins",
                path.display()
            ));
        }
        if entry.is_empty() || entry.contains(['/', '\\']) || entry.starts_with('.') {
            return Err(format!("{}: [plugin].entry {entry:?} must be a plain file name", path.display()));
        }
        Ok(Manifest { dir: dir.to_path_buf(), id, version, entry })
    }

    /// The library's file name in the plugin folder: the entry plus the platform suffix.
    fn library_file_name(&self) -> String {
        native_library_file_name(&self.entry)
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
        copy(&Manifest::path(&manifest.dir), &folder.join("plugin.toml"))?;
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
        let mut command = Command::new(&self.program);
        command.args(&self.args).args(["-std=c11", "-Wall", "-Wextra", "-Werror"]);
        command.args(if debug { &["-O0", "-g"][..] } else { &["-O2"][..] });
        command.args(["-shared", "-fPIC", "-fvisibility=hidden"]).arg("-I").arg(include);
        command.arg("-o").arg(output).arg(source);
        let status = command.status().map_err(|error| format!("cannot run {}: {error}", self.program))?;
        if !status.success() {
            return Err(format!("{} failed to compile {} ({status})", self.program, source.display()));
        }
        Ok(())
    }
}

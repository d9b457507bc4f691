//! WebAssembly test plugins: core modules written in WAT (or compiled from C), turned into
//! components of the `plugbay:plugin` world (`wit/plugbay.wit`) with `wit-component`.
//!
//! [`guest_wat`] is one guest that serves every method the wasm tests need, dispatched on
//! the method's first letter (see [`GUEST_METHODS`]); the fault methods trap, loop, recurse
//! or grow memory on purpose. Its memory layout: the describe JSON at 1024, constant strings
//! at 2048, return areas at 32 (call results) and 128 (host call results), a bump heap from
//! 4096 that each post-return resets.

use std::path::Path;

use wit_component::{ComponentEncoder, StringEncoding};
use wit_parser::Resolve;

use crate::workspace_root;

/// The methods of [`guest_wat`], each told apart by its first letter:
/// `echo` (returns the input), `count` (a counter kept in the instance, 4 bytes LE),
/// `spin` (loops forever), `recurse` (unbounded recursion), `grow` (grows memory until
/// refused), `trap` (`unreachable`), `divide` (by zero), `oob` (out-of-bounds load), `fail`
/// (returns an `invalid-argument` failure), `log` (logs the input, then echoes),
/// `invoke` (calls `echo.test@1` `echo` through the host with the input), `publish`
/// (publishes the input on topic `wasm.test`, then echoes), `hold` (calls `fixture@1`
/// `sleep` through the host with the input, so the guest waits inside a host call).
pub const GUEST_METHODS: &[&str] = &[
    "echo", "count", "spin", "recurse", "grow", "trap", "divide", "oob", "fail", "log", "invoke", "publish",
    "hold",
];

/// The WIT package of the contract, from the workspace.
fn contract() -> String {
    std::fs::read_to_string(workspace_root().join("wit/plugbay.wit")).expect("read wit/plugbay.wit")
}

/// Turns a core module into a component of `world` in `wit` (WIT text holding one or more
/// packages, the contract first), with the WASI preview 1 reactor adapter when the module
/// imports `wasi_snapshot_preview1` (modules built with wasi-libc).
///
/// # Panics
/// If the module does not fit the world (the message is wit-component's).
pub fn componentize_with(core: &[u8], wit: &[&str], world: &str) -> Vec<u8> {
    let mut resolve = Resolve::default();
    let mut last = None;
    for (index, text) in wit.iter().enumerate() {
        last = Some(resolve.push_str(format!("package{index}.wit"), text).expect("valid WIT"));
    }
    let package = last.expect("at least one WIT package");
    let world = resolve.select_world(&[package], Some(world)).expect("the world exists");
    let mut module = core.to_vec();
    wit_component::embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8)
        .expect("embed the component type");
    let mut encoder = ComponentEncoder::default().validate(true).module(&module).expect("a core module");
    let imports_wasi =
        wasmparser_imports(core).iter().any(|module_name| module_name == "wasi_snapshot_preview1");
    if imports_wasi {
        encoder = encoder
            .adapter(
                "wasi_snapshot_preview1",
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )
            .expect("the WASI adapter");
    }
    encoder.encode().expect("encode the component")
}

/// The module names a core module imports from.
fn wasmparser_imports(core: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(core) {
        if let Ok(wasmparser::Payload::ImportSection(reader)) = payload {
            for import in reader.into_imports().flatten() {
                names.push(import.module.to_owned());
            }
        }
    }
    names
}

/// A core module (WAT text or binary) as a component of the `plugbay:plugin` world.
///
/// # Panics
/// If the WAT does not parse or does not fit the world.
pub fn component_from_wat(wat: &str) -> Vec<u8> {
    let core = wat::parse_str(wat).expect("valid WAT");
    componentize_with(&core, &[&contract()], "plugin")
}

/// A component built against `plugbay:plugin@2.0.0` (the contract with its version
/// changed): the host must refuse it, naming the import.
pub fn component_of_another_version(id: &str) -> Vec<u8> {
    let contract = contract().replace("@1.0.0", "@2.0.0");
    let core = wat::parse_str(guest_wat(id, &[("echo.test@1", &["echo"])]).replace("@1.0.0", "@2.0.0"))
        .expect("valid WAT");
    componentize_with(&core, &[&contract], "plugin")
}

/// A guest that also imports `wasi:sockets/instance-network` (declared here with a
/// placeholder signature; the host refuses it by name before linking).
pub fn component_importing_sockets(id: &str) -> Vec<u8> {
    let sockets =
        "package wasi:sockets@0.2.6;\ninterface instance-network {\n  instance-network: func() -> u32;\n}\n";
    let world = "package plugbay:probe;\nworld sockets {\n  import wasi:sockets/instance-network@0.2.6;\n  \
                 import plugbay:plugin/host@1.0.0;\n  export plugbay:plugin/guest@1.0.0;\n}\n";
    let wat = guest_wat(id, &[("echo.test@1", &["echo"])]).replacen(
        "(memory",
        "(import \"wasi:sockets/instance-network@0.2.6\" \"instance-network\" (func (result i32)))\n  (memory",
        1,
    );
    let core = wat::parse_str(wat).expect("valid WAT");
    componentize_with(&core, &[&contract(), sockets, world], "sockets")
}

/// The describe JSON of a plugin.
fn describe_json(id: &str, provides: &[(&str, &[&str])]) -> String {
    let provides: Vec<String> = provides
        .iter()
        .map(|(capability, methods)| {
            let methods: Vec<String> = methods.iter().map(|m| format!("\"{m}\"")).collect();
            format!("\"{capability}\":[{}]", methods.join(","))
        })
        .collect();
    format!("{{\"id\":\"{id}\",\"version\":\"0.1.0\",\"provides\":{{{}}}}}", provides.join(","))
}

/// WAT text escaping for a data segment.
fn wat_string(text: &str) -> String {
    text.bytes().map(|byte| format!("\\{byte:02x}")).collect()
}

/// The WAT of the test guest (see the module docs and [`GUEST_METHODS`]), describing
/// itself as `id` 0.1.0 with `provides`.
pub fn guest_wat(id: &str, provides: &[(&str, &[&str])]) -> String {
    guest_wat_with(id, provides, INVOKE_IMPORT, INVOKE_METHODS)
}

/// [`guest_wat`] without the host's `invoke` import (its `invoke` and `hold` methods echo
/// instead): a guest that imports nothing that can wait, so the host calls its persistent
/// instance on the caller's thread.
pub fn inline_guest_wat(id: &str, provides: &[(&str, &[&str])]) -> String {
    guest_wat_with(id, provides, "", "")
}

/// Writes a plugin folder `dir/<id>/` with the guest of [`inline_guest_wat`] and its manifest.
pub fn write_inline_guest(
    dir: &crate::PluginsDir,
    id: &str,
    provides: &[(&str, &[&str])],
    extra: &str,
) -> std::path::PathBuf {
    write_component(dir, id, component_from_wat(&inline_guest_wat(id, provides)), provides, extra)
}

/// The guest's import of the host's `invoke`.
const INVOKE_IMPORT: &str = r#"
  (import "plugbay:plugin/host@1.0.0" "invoke" (func $invoke (param i32 i32 i32 i32 i32 i32 i32 i32 i32)))"#;

/// The guest's methods that call through the host's `invoke`.
const INVOKE_METHODS: &str = "
    ;; invoke echo.test@1 echo with the input; its result has our result's layout
    (if (i32.eq (local.get $first) (i32.const 105))
      (then
        (call $invoke (i32.const 2048) (i32.const 11) (i32.const 2064) (i32.const 4)
          (local.get $ct) (local.get $ctl) (local.get $b) (local.get $bl) (i32.const 128))
        (return (i32.const 128))))
    ;; hold: fixture@1 sleep with the input, through the host
    (if (i32.eq (local.get $first) (i32.const 104))
      (then
        (call $invoke (i32.const 2128) (i32.const 9) (i32.const 2144) (i32.const 5)
          (local.get $ct) (local.get $ctl) (local.get $b) (local.get $bl) (i32.const 128))
        (return (i32.const 128))))";

/// The test guest's WAT with `invoke_import` and `invoke_methods` (both empty, or
/// [`INVOKE_IMPORT`] and [`INVOKE_METHODS`]).
fn guest_wat_with(
    id: &str,
    provides: &[(&str, &[&str])],
    invoke_import: &str,
    invoke_methods: &str,
) -> String {
    let describe = describe_json(id, provides);
    let host = "plugbay:plugin/host@1.0.0";
    let guest = "plugbay:plugin/guest@1.0.0";
    format!(
        r#"(module
  (import "{host}" "log" (func $log (param i32 i32 i32)))
  (import "{host}" "publish" (func $publish (param i32 i32 i32 i32 i32 i32 i32 i32 i32))){invoke_import}
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (global $counter (mut i32) (i32.const 0))
  (data (i32.const 1024) "{describe_data}")
  (data (i32.const 2048) "echo.test@1")
  (data (i32.const 2064) "echo")
  (data (i32.const 2080) "wasm.test")
  (data (i32.const 2096) "published")
  (data (i32.const 2112) "bad input")
  (data (i32.const 2128) "fixture@1")
  (data (i32.const 2144) "sleep")

  (func $realloc (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
    (local $ptr i32) (local $end i32)
    (local.set $ptr (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
                             (i32.sub (i32.const 0) (local.get $align))))
    (local.set $end (i32.add (local.get $ptr) (local.get $size)))
    (if (i32.gt_u (local.get $end) (i32.shl (memory.size) (i32.const 16)))
      (then (if (i32.eq (memory.grow (i32.add (i32.shr_u (i32.sub (local.get $end) (i32.shl (memory.size) (i32.const 16))) (i32.const 16)) (i32.const 1))) (i32.const -1))
        (then unreachable))))
    (global.set $heap (local.get $end))
    (local.get $ptr))

  (func $reset (param i32) (global.set $heap (i32.const 4096)))
  (export "cabi_post_{guest}#call" (func $reset))
  (export "cabi_post_{guest}#init" (func $reset))
  (export "cabi_post_{guest}#on-event" (func $reset))

  (func (export "{guest}#describe") (result i32)
    (i32.store (i32.const 16) (i32.const 1024))
    (i32.store (i32.const 20) (i32.const {describe_len}))
    (i32.const 16))

  (func (export "{guest}#init") (param i32 i32) (result i32)
    (i32.store8 (i32.const 32) (i32.const 0))
    (i32.const 32))

  (func (export "{guest}#on-event") (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (i32.store8 (i32.const 32) (i32.const 0))
    (i32.const 32))

  (func (export "{guest}#shutdown"))

  (func $deep (param $n i32) (result i32)
    (i32.add (call $deep (i32.add (local.get $n) (i32.const 1))) (i32.const 1)))

  (func $echo (param $ct i32) (param $ctl i32) (param $b i32) (param $bl i32) (result i32)
    (i32.store8 (i32.const 32) (i32.const 0))
    (i32.store (i32.const 36) (local.get $ct))
    (i32.store (i32.const 40) (local.get $ctl))
    (i32.store (i32.const 44) (local.get $b))
    (i32.store (i32.const 48) (local.get $bl))
    (i32.const 32))

  (func (export "{guest}#call") (param $m i32) (param $ml i32) (param $ct i32) (param $ctl i32) (param $b i32) (param $bl i32) (result i32)
    (local $first i32)
    (local.set $first (i32.load8_u (local.get $m)))
    ;; count: the counter as 4 bytes, little endian
    (if (i32.eq (local.get $first) (i32.const 99))
      (then
        (global.set $counter (i32.add (global.get $counter) (i32.const 1)))
        (i32.store (i32.const 64) (global.get $counter))
        (return (call $echo (local.get $ct) (local.get $ctl) (i32.const 64) (i32.const 4)))))
    ;; spin
    (if (i32.eq (local.get $first) (i32.const 115)) (then (loop $forever (br $forever)) unreachable))
    ;; recurse
    (if (i32.eq (local.get $first) (i32.const 114)) (then (drop (call $deep (i32.const 0))) unreachable))
    ;; grow: 1 MiB at a time until refused
    (if (i32.eq (local.get $first) (i32.const 103))
      (then (loop $more (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable))
    ;; trap
    (if (i32.eq (local.get $first) (i32.const 116)) (then unreachable))
    ;; divide by zero
    (if (i32.eq (local.get $first) (i32.const 100))
      (then (drop (i32.div_u (i32.const 1) (i32.sub (local.get $ml) (local.get $ml)))) unreachable))
    ;; out-of-bounds load
    (if (i32.eq (local.get $first) (i32.const 111)) (then (drop (i32.load (i32.const -4))) unreachable))
    ;; fail: invalid-argument "bad input"
    (if (i32.eq (local.get $first) (i32.const 102))
      (then {bad_input}))
    ;; log: info
    (if (i32.eq (local.get $first) (i32.const 108))
      (then (call $log (i32.const 2) (local.get $b) (local.get $bl)))){invoke_methods}
    ;; publish on wasm.test
    (if (i32.eq (local.get $first) (i32.const 112))
      (then
        (call $publish (i32.const 2080) (i32.const 9) (i32.const 2096) (i32.const 9)
          (local.get $ct) (local.get $ctl) (local.get $b) (local.get $bl) (i32.const 128))
        (if (i32.ne (i32.load8_u (i32.const 128)) (i32.const 0)) (then (return (i32.const 128))))))
    (call $echo (local.get $ct) (local.get $ctl) (local.get $b) (local.get $bl)))
)
"#,
        describe_data = wat_string(&describe),
        describe_len = describe.len(),
        bad_input = BAD_INPUT,
    )
}

/// Returns an `invalid-argument` failure "bad input" (the string at 2112) in the
/// return area at 32: the layout of `result<_, failure>` and of `result<payload, failure>`.
const BAD_INPUT: &str = "
        (i32.store8 (i32.const 32) (i32.const 1))
        (i32.store8 (i32.const 36) (i32.const 0))
        (i32.store (i32.const 40) (i32.const 2112))
        (i32.store (i32.const 44) (i32.const 9))
        (return (i32.const 32))";

/// The `state` interface's functions for [`stateful_guest_wat`], over the guest's `count`
/// counter.
const STATE_FUNCS: &str = r#"
  (func (export "plugbay:plugin/state@1.0.0#snapshot") (result i32)
    (i32.store (i32.const 64) (global.get $counter))
    (i32.store8 (i32.const 32) (i32.const 0))
    (i32.store (i32.const 36) (i32.const 64))
    (i32.store (i32.const 40) (i32.const 4))
    (i32.const 32))
  (func (export "plugbay:plugin/state@1.0.0#restore") (param $p i32) (param $l i32) (result i32)
    (if (i32.ne (local.get $l) (i32.const 4))
      (then BAD_INPUT))
    (if (i32.eq (i32.load (local.get $p)) (i32.const 2))
      (then BAD_INPUT))
    (global.set $counter (i32.load (local.get $p)))
    (i32.store8 (i32.const 32) (i32.const 0))
    (i32.const 32))
  (export "cabi_post_plugbay:plugin/state@1.0.0#restore" (func $reset))
"#;

/// [`guest_wat`] that also exports the `state` interface (world `stateful-plugin`):
/// `snapshot` returns the `count` counter (4 bytes, little endian) and `restore` sets it.
/// `restore` refuses (`invalid-argument`) any other length, and the counter value 2: a
/// snapshot this plugin cannot read, as a newer version might not read an older one's.
pub fn stateful_guest_wat(id: &str, provides: &[(&str, &[&str])]) -> String {
    let wat = guest_wat(id, provides);
    let end = wat.rfind(')').expect("the module's closing parenthesis");
    format!("{}{})\n", &wat[..end], STATE_FUNCS.replace("BAD_INPUT", BAD_INPUT))
}

/// A stateful guest ([`stateful_guest_wat`]) as a component of the `stateful-plugin` world.
///
/// # Panics
/// If the WAT does not fit the world.
pub fn stateful_component(id: &str, provides: &[(&str, &[&str])]) -> Vec<u8> {
    let core = wat::parse_str(stateful_guest_wat(id, provides)).expect("valid WAT");
    componentize_with(&core, &[&contract()], "stateful-plugin")
}

/// A component that exports the `state` interface with the wrong `snapshot` (returning a
/// `u32`): the host must refuse it at load, naming the function.
pub fn component_with_a_wrong_state_interface(id: &str, provides: &[(&str, &[&str])]) -> Vec<u8> {
    let contract =
        contract().replace("snapshot: func() -> result<list<u8>, failure>;", "snapshot: func() -> u32;");
    assert!(contract.contains("snapshot: func() -> u32;"), "wit/plugbay.wit's snapshot changed");
    let wat = stateful_guest_wat(id, provides);
    let start =
        wat.find("  (func (export \"plugbay:plugin/state@1.0.0#snapshot\")").expect("the snapshot export");
    let end =
        wat.find("  (func (export \"plugbay:plugin/state@1.0.0#restore\")").expect("the restore export");
    let wat = format!(
        "{}  (func (export \"plugbay:plugin/state@1.0.0#snapshot\") (result i32) (i32.const 7))\n{}",
        &wat[..start],
        &wat[end..]
    );
    let core = wat::parse_str(wat).expect("valid WAT");
    componentize_with(&core, &[&contract], "stateful-plugin")
}

/// The test guest ([`guest_wat`]) with `functions` more small functions, a compile bomb:
/// a few MiB of code that takes the compiler seconds.
pub fn component_with_many_functions(id: &str, provides: &[(&str, &[&str])], functions: usize) -> Vec<u8> {
    let wat = guest_wat(id, provides);
    let end = wat.rfind(')').expect("the module's closing parenthesis");
    let mut bomb = String::with_capacity(functions * 64);
    for index in 0..functions {
        bomb.push_str(&format!(
            "  (func (param i32) (result i32) (i32.add (local.get 0) (i32.const {index})))\n"
        ));
    }
    let core = wat::parse_str(format!("{}{bomb})\n", &wat[..end])).expect("valid WAT");
    componentize_with(&core, &[&contract()], "plugin")
}

/// A manifest for a wasm plugin; `extra` is appended (e.g. `[limits]` or `[wasm]` tables).
pub fn wasm_manifest(id: &str, entry: &str, provides: &[(&str, &[&str])], extra: &str) -> String {
    let native = crate::native_manifest(id, entry, provides);
    format!("{}{extra}", native.replacen("runtime = \"native\"", "runtime = \"wasm\"", 1))
}

/// Writes a plugin folder `dir/<id>/` with `plugin.wasm` (the test guest) and its manifest.
pub fn write_guest(
    dir: &crate::PluginsDir,
    id: &str,
    provides: &[(&str, &[&str])],
    extra: &str,
) -> std::path::PathBuf {
    write_component(dir, id, component_from_wat(&guest_wat(id, provides)), provides, extra)
}

/// Writes a plugin folder `dir/<id>/` with `component` as `plugin.wasm` and its manifest.
pub fn write_component(
    dir: &crate::PluginsDir,
    id: &str,
    component: Vec<u8>,
    provides: &[(&str, &[&str])],
    extra: &str,
) -> std::path::PathBuf {
    dir.write_file(id, "plugin.wasm", component);
    dir.write_manifest(id, wasm_manifest(id, "plugin.wasm", provides, extra))
}

/// Compiles C source into a core WebAssembly module with Debian's `clang` (target
/// `wasm32-wasi`, sysroot `/usr` with wasi-libc, `include/` for `plugbay_wasm.h`), linked
/// by `wasm-ld` as a reactor (no `main`; the plugin's exports are marked with
/// `export_name`).
///
/// # Panics
/// If clang, lld or wasi-libc is missing (the message says how to install them) or the
/// compile fails.
pub fn compile_c_to_wasm(source: &Path, out: &Path) {
    compile_c_to_wasm_with(source, out, &[]);
}

/// [`compile_c_to_wasm`] with extra compiler flags (e.g. `-DPLUGIN_ID="x"`).
///
/// # Panics
/// As [`compile_c_to_wasm`].
pub fn compile_c_to_wasm_with(source: &Path, out: &Path, flags: &[&str]) {
    let status = std::process::Command::new("clang")
        .args(["--target=wasm32-wasi", "--sysroot=/usr", "-O2", "-mexec-model=reactor", "-Wall", "-Werror"])
        .arg("-I")
        .arg(crate::include_dir())
        .args(flags)
        .arg("-o")
        .arg(out)
        .arg(source)
        .status()
        .unwrap_or_else(|error| {
            panic!("cannot run clang ({error}); install it with: apt-get install clang lld wasi-libc libclang-rt-dev-wasm32")
        });
    assert!(
        status.success(),
        "clang failed on {} (apt-get install clang lld wasi-libc libclang-rt-dev-wasm32)",
        source.display()
    );
}

/// Compiles C source with [`compile_c_to_wasm`] and wraps it into a component of the
/// `plugbay:plugin` world (with the WASI adapter when it uses wasi-libc's I/O).
///
/// # Panics
/// As [`compile_c_to_wasm`] and [`componentize_with`].
pub fn component_from_c(source: &Path, flags: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("a temp dir");
    let core = dir.path().join("module.wasm");
    compile_c_to_wasm_with(source, &core, flags);
    componentize_with(&std::fs::read(&core).expect("read the module"), &[&contract()], "plugin")
}

/// The C example `examples/plugins/text-tools-wasm` as a component (`text.transform@1`,
/// the same methods as the native text-tools).
pub fn text_tools_wasm() -> Vec<u8> {
    component_from_c(&workspace_root().join("examples/plugins/text-tools-wasm/text_tools.c"), &[])
}

/// The sandbox probe (`fixtures/wasm/probe.c`, capability `probe@1`) as plugin `id`.
pub fn probe(id: &str) -> Vec<u8> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/wasm/probe.c");
    component_from_c(&source, &[&format!("-DPLUGIN_ID=\"{id}\"")])
}

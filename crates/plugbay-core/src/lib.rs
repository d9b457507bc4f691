//! plugbay's host library: discover plugins in a folder, check them, load them into a
//! runtime, and route calls and events to them.
//!
//! ```no_run
//! use plugbay_core::{Call, Host, HostConfig, Payload};
//!
//! # async fn example() -> plugbay_core::Result<()> {
//! let host = Host::build(HostConfig::with_plugin_dir("target/plugins"))?;
//! let report = host.load_all().await;
//! for failure in &report.failed {
//!     eprintln!("not loaded: {failure}");
//! }
//! let reply = host.invoke(Call::new("text.transform@1", "upper", Payload::json("hello")?)).await?;
//! assert_eq!(reply.to_json::<String>()?, "HELLO");
//! # Ok(()) }
//! ```
//!
//! # Core concepts
//! - **Plugin**: a folder `plugins/<id>/` with a manifest ([`manifest::Manifest`],
//!   `plugin.toml`) and an artifact. [`catalog`] finds them; unknown fields, bad ids and
//!   paths that leave the folder are refused with errors that name file, line and field.
//! - **Runtime**: what runs an artifact ([`runtime::Runtime`]). `native` (C ABI,
//!   `include/plugbay.h`): fastest, but native code shares the host's process, so a
//!   crashing plugin crashes the host; trusted code only. `wasm` (cargo feature `wasm`, on
//!   by default): WebAssembly components of `wit/plugbay.wit`, sandboxed in the host's
//!   process with memory, deadline and stack limits and only the grants of
//!   `[permissions]`. `process`: a separate program speaking gRPC.
//! - **Lifecycle**: every plugin has a [`State`]; transitions are checked and published as
//!   events on [`events::LIFECYCLE_TOPIC`]; [`events`] lists every topic the host publishes.
//! - **Call**: [`Call`] = target (a capability like `text.transform@1`, or `plugin:<id>`),
//!   method and [`Payload`]. [`Host::invoke`] routes it (round-robin across providers),
//!   checks the method against the manifest's `[provides]` whitelist, and runs it.
//!   [`Host::invoke_sync`] and [`Host::resolve`] are the synchronous fast paths. Every
//!   entry point, and every call a plugin makes through the host, takes the same steps
//!   (route, admit under `limits.max_concurrency`, deadline and call depth, run, metrics,
//!   retry), so a rule holds on every path.
//! - **Errors**: every failure is an [`Error`] with a gRPC-like [`Code`] and the plugin,
//!   file, field or method it is about.
#![deny(unsafe_code)] // allowed only in runtime/native.rs and runtime/native/ (the C ABI), runtime/wasm/cache.rs and runtime/wasm/inline.rs

mod bus;
pub mod call;
#[doc(hidden)] // the daemon's scan for `plugbay list`; not a stable API
pub mod catalog;
pub mod config;
pub mod error;
pub mod events;
mod host;
pub mod lifecycle;
pub mod manifest;
pub mod metrics;
pub mod platform;
#[doc(hidden)] // the runtimes' traits: implemented only inside this crate
pub mod runtime;
#[doc(hidden)] // read a file beneath a folder: the host's own file access
pub mod safe_fs;
mod scheduler;
mod supervisor;
pub mod trust;
mod watch;

pub use call::{Call, ContentType, Deadline, Payload, Target};
pub use config::{HostConfig, SandboxMode};
pub use error::{Code, Error, Result};
pub use events::{Event, LifecycleChange};
pub use host::{
    ArtifactInspection, ErrorInfo, Host, Inspection, LoadInspection, LoadReport, ManifestInspection,
    MethodHandle, NativeInspection, PluginInfo,
};
pub use lifecycle::State;
pub use manifest::{
    Manifest, ProcessSettings, ProcessTransport, RuntimeKind, WasmInstanceMode, WasmSettings,
};
pub use metrics::MetricsSnapshot;
/// What a native library's table says, as [`Host::inspect`] reports it.
pub use runtime::SandboxReport;
pub use runtime::native::NativeInfo;

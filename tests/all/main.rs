//! plugbay's integration tests: one binary, one link. Every test uses real plugins built by
//! `plugbay-testkit` (Rust cdylibs, C libraries, broken artifacts) in temporary folders.
//! Tests named after a FAULTS.md case start with its id (`a5_...`, `b1_...`).

mod abi_layout;
mod both_ways;
mod cli;
mod daemon;
mod events;
mod examples;
mod lifecycle;
mod manifests;
mod native;
mod pipeline;
mod process;
mod python;
mod reload;
mod supervision;
mod support;
mod util;
mod wasm;

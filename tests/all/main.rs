//! plugbay's integration tests: one binary, one link. Every test uses real plugins built by
//! `plugbay-testkit` (Rust cdylibs, C libraries, broken artifacts) in temporary folders.
//! Tests named after a case of the fault catalogue start with its id (`a5_...`, `b1_...`).

mod abi_layout;
mod both_ways;
mod cli;
mod daemon;
mod daemon_harness;
mod docs;
mod events;
mod examples;
mod lifecycle;
mod manifests;
mod native;
mod permissions;
mod pipeline;
mod process;
mod python;
mod reload;
mod sandbox;
mod supervision;
mod support;
mod tokens;
mod trust;
mod trust_policy;
mod trust_race;
mod util;
mod wasm;

//! The sandbox of plugbay's process plugins: the kernel layers that contain a plugin
//! (namespaces, cgroups, seccomp, landlock, rlimits), and [`probe`], what this kernel offers
//! of them, read once when the host starts and printed by `plugbay doctor`.
//!
//! This crate knows nothing of plugins or of the host: it answers "what can this machine
//! do", and (in later steps) builds a contained child process from a plain description.
#![deny(unsafe_code)] // allowed only in probe/landlock.rs (one raw syscall)

pub mod probe;

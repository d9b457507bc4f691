//! The sandbox of plugbay's process plugins: the kernel layers that contain a plugin
//! (namespaces, a private root, cgroups, seccomp, landlock, rlimits, no capabilities),
//! [`probe`] (what this kernel offers of them, read once when the host starts and printed
//! by `plugbay doctor`), and the spawn path that starts a program with or without them.
//!
//! This crate knows nothing of plugins or of the host: it answers "what can this machine
//! do", and starts a contained child process from a plain [`Spec`]. Linux system calls
//! and their `unsafe` live here (in `spawn`, `child`, `contained`, `mounts` and the
//! landlock probe) and nowhere else in plugbay.
#![deny(unsafe_code)]

pub mod child;
#[cfg(target_os = "linux")]
mod image;
pub mod probe;
pub mod spawn;

#[cfg(target_os = "linux")]
mod audit;
#[cfg(target_os = "linux")]
mod cgroup;
#[cfg(target_os = "linux")]
mod contained;
#[cfg(target_os = "linux")]
mod fence;
#[cfg(target_os = "linux")]
mod mounts;
#[cfg(target_os = "linux")]
mod sandboxing;
#[cfg(target_os = "linux")]
mod seccomp;
mod spec;

#[cfg(target_os = "linux")]
pub use cgroup::Cgroup;
#[cfg(target_os = "linux")]
pub use contained::{Contained, Prepared};
#[cfg(target_os = "linux")]
pub use image::ProgramImage;
pub use probe::Layer;
#[cfg(target_os = "linux")]
pub use sandboxing::{LayerError, Sandboxing};
#[cfg(target_os = "linux")]
pub use seccomp::{
    GRANTABLE as GRANTABLE_SYSCALLS, KILLED as KILLED_SYSCALLS, grantable as grantable_syscall,
    name as syscall_name,
};
pub use spec::{Limits, NOBODY as NOBODY_UID, Spec};

//! OS-level containment of plugin processes. Today: starting a plugin program cheaply with
//! the set-up every process plugin gets (its own process group, death with the host, a
//! parent re-check), and watching it exit. Namespaces, cgroups, seccomp and landlock arrive
//! here in a later issue.

pub mod child;
pub mod spawn;

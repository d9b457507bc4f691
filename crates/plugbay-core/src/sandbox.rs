//! OS-level containment of plugin processes. Today: the child set-up every process plugin
//! gets (its own process group, death with the host, a parent re-check). Namespaces,
//! cgroups, seccomp and landlock arrive here in a later issue.

pub mod child;

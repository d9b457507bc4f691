//! Namespaces: the kernel offers one when `/proc/self/ns/<name>` exists; a user namespace
//! also needs `user.max_user_namespaces` above 0 and, for a host that is not root, the
//! distribution's switches for unprivileged user namespaces turned on.

use super::{Check, Layer, read_trimmed};

/// The checks of the namespace layers, in [`Layer::ALL`]'s order.
pub(super) fn checks(root: bool) -> Vec<Check> {
    vec![
        user(root),
        listed(Layer::MountNamespace, &["mnt"]),
        listed(Layer::PidNamespace, &["pid"]),
        listed(Layer::NetworkNamespace, &["net"]),
        listed(Layer::IpcUtsNamespaces, &["ipc", "uts"]),
    ]
}

/// Available when every one of `names` is listed in `/proc/self/ns`.
fn listed(layer: Layer, names: &[&str]) -> Check {
    let absent: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| !std::path::Path::new("/proc/self/ns").join(name).exists())
        .collect();
    if absent.is_empty() {
        let files: Vec<String> = names.iter().map(|name| format!("/proc/self/ns/{name}")).collect();
        Check::ok(layer, format!("the kernel offers it ({})", files.join(", ")))
    } else {
        Check::missing(
            layer,
            format!(
                "the kernel does not offer it (/proc/self/ns/{} is missing)",
                absent.join(", /proc/self/ns/")
            ),
        )
    }
}

/// The user namespace, from the files that allow or forbid it.
fn user(root: bool) -> Check {
    let settings = UserNamespaceSettings {
        listed: std::path::Path::new("/proc/self/ns/user").exists(),
        max_user_namespaces: read_trimmed("/proc/sys/user/max_user_namespaces").and_then(|v| v.parse().ok()),
        unprivileged_clone: read_trimmed("/proc/sys/kernel/unprivileged_userns_clone")
            .and_then(|v| v.parse().ok()),
        apparmor_restricts: read_trimmed("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
            .and_then(|v| v.parse().ok()),
    };
    settings.check(root)
}

/// The kernel settings that decide whether a user namespace can be made.
#[derive(Debug, Clone, Copy, Default)]
struct UserNamespaceSettings {
    /// `/proc/self/ns/user` exists (CONFIG_USER_NS).
    listed: bool,
    /// `user.max_user_namespaces`.
    max_user_namespaces: Option<u64>,
    /// Debian's `kernel.unprivileged_userns_clone`, where it exists.
    unprivileged_clone: Option<u8>,
    /// Ubuntu's `kernel.apparmor_restrict_unprivileged_userns`, where it exists.
    apparmor_restricts: Option<u8>,
}

impl UserNamespaceSettings {
    fn check(self, root: bool) -> Check {
        let layer = Layer::UserNamespace;
        if !self.listed {
            return Check::missing(
                layer,
                "the kernel does not offer it (/proc/self/ns/user is missing: CONFIG_USER_NS)",
            );
        }
        if self.max_user_namespaces == Some(0) {
            return Check::missing(
                layer,
                "user.max_user_namespaces = 0 allows none (sysctl user.max_user_namespaces)",
            );
        }
        if !root && self.unprivileged_clone == Some(0) {
            return Check::missing(
                layer,
                "the host is not root and unprivileged user namespaces are off (sysctl kernel.unprivileged_userns_clone = 0)",
            );
        }
        if !root && self.apparmor_restricts == Some(1) {
            return Check::missing(
                layer,
                "the host is not root and AppArmor restricts unprivileged user namespaces \
                 (sysctl kernel.apparmor_restrict_unprivileged_userns = 1)",
            );
        }
        let limit =
            self.max_user_namespaces.map_or_else(String::new, |max| format!("; max_user_namespaces = {max}"));
        let who = if root { "the host runs as root" } else { "unprivileged user namespaces are allowed" };
        Check::ok(layer, format!("{who}{limit}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> UserNamespaceSettings {
        UserNamespaceSettings {
            listed: true,
            max_user_namespaces: Some(1000),
            ..UserNamespaceSettings::default()
        }
    }

    #[test]
    fn user_namespaces_follow_the_kernel_settings() {
        assert!(allowed().check(false).available);
        assert!(allowed().check(true).available);
        let unlisted = UserNamespaceSettings { listed: false, ..allowed() };
        assert!(unlisted.check(true).detail.contains("CONFIG_USER_NS"));
        let none = UserNamespaceSettings { max_user_namespaces: Some(0), ..allowed() };
        assert!(!none.check(true).available);
        let debian_off = UserNamespaceSettings { unprivileged_clone: Some(0), ..allowed() };
        assert!(debian_off.check(true).available, "root needs no unprivileged switch");
        let refused = debian_off.check(false);
        assert!(
            !refused.available && refused.detail.contains("kernel.unprivileged_userns_clone = 0"),
            "{refused:?}"
        );
        let apparmor = UserNamespaceSettings { apparmor_restricts: Some(1), ..allowed() };
        assert!(apparmor.check(false).detail.contains("apparmor_restrict_unprivileged_userns"));
    }
}

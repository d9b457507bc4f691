//! The cgroup hierarchies this machine has mounted (from `/proc/self/mountinfo`) and which
//! one the sandbox can use: v2 when its root offers the `cpu`, `memory` and `pids`
//! controllers, else v1 when each of them is mounted (with `freezer`, to stop every process
//! of a plugin at once).

use std::path::{Path, PathBuf};

use super::{Check, Layer};

/// The controllers the sandbox's limits need on either version.
const NEEDED: [&str; 3] = ["cpu", "memory", "pids"];

/// Which cgroup version the sandbox uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// One hierarchy per controller (`/sys/fs/cgroup/<controller>`).
    V1,
    /// The unified hierarchy.
    V2,
}

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CgroupMount {
    /// Where it is mounted.
    pub mount: PathBuf,
    /// Its controllers (v1: the mount's own; v2: the root's `cgroup.controllers`).
    pub controllers: Vec<String>,
}

/// The cgroup hierarchies mounted on this machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Cgroups {
    /// The v1 hierarchies, one per mount.
    pub v1: Vec<CgroupMount>,
    /// The v2 (unified) hierarchy, if mounted.
    pub v2: Option<CgroupMount>,
    /// The version the sandbox uses, `None` when neither offers what it needs.
    pub usable: Option<CgroupVersion>,
}

impl Cgroups {
    /// Reads `/proc/self/mountinfo` and each v2 root's `cgroup.controllers`.
    pub fn read() -> Cgroups {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Cgroups::from_mountinfo(&mountinfo, |mount| {
            std::fs::read_to_string(mount.join("cgroup.controllers")).ok()
        })
    }

    /// Parses `mountinfo`; `controllers_of` reads a v2 mount's `cgroup.controllers`.
    fn from_mountinfo(mountinfo: &str, controllers_of: impl Fn(&Path) -> Option<String>) -> Cgroups {
        let mut cgroups = Cgroups::default();
        for line in mountinfo.lines() {
            let Some((mount, fstype, super_options)) = parse_line(line) else { continue };
            match fstype {
                "cgroup" => {
                    let controllers = super_options
                        .split(',')
                        .filter(|option| !is_mount_option(option))
                        .map(str::to_owned)
                        .collect();
                    cgroups.v1.push(CgroupMount { mount, controllers });
                }
                "cgroup2" if cgroups.v2.is_none() => {
                    let controllers = controllers_of(&mount)
                        .map(|text| text.split_whitespace().map(str::to_owned).collect())
                        .unwrap_or_default();
                    cgroups.v2 = Some(CgroupMount { mount, controllers });
                }
                _ => {}
            }
        }
        cgroups.usable = cgroups.choose();
        cgroups
    }

    fn choose(&self) -> Option<CgroupVersion> {
        let v2_has = |name: &str| self.v2.as_ref().is_some_and(|v2| v2.controllers.iter().any(|c| c == name));
        if NEEDED.iter().all(|name| v2_has(name)) {
            return Some(CgroupVersion::V2);
        }
        let v1_has = |name: &str| self.v1.iter().any(|mount| mount.controllers.iter().any(|c| c == name));
        (NEEDED.iter().chain(&["freezer"]).all(|name| v1_has(name))).then_some(CgroupVersion::V1)
    }

    /// The layer's check: which version is used and what each hierarchy offers.
    pub(super) fn check(&self) -> Check {
        let v1: Vec<&str> =
            self.v1.iter().flat_map(|mount| mount.controllers.iter().map(String::as_str)).collect();
        let v1 = if v1.is_empty() { "v1: none".to_owned() } else { format!("v1: {}", v1.join(", ")) };
        let v2 = match &self.v2 {
            None => "v2: not mounted".to_owned(),
            Some(v2) if v2.controllers.is_empty() => format!("v2 at {}: no controllers", v2.mount.display()),
            Some(v2) => format!("v2 at {}: {}", v2.mount.display(), v2.controllers.join(", ")),
        };
        match self.usable {
            Some(version) => Check::ok(
                Layer::Cgroups,
                format!("using {}; {v1}; {v2}", if version == CgroupVersion::V2 { "v2" } else { "v1" }),
            ),
            None => Check::missing(
                Layer::Cgroups,
                format!(
                    "no hierarchy offers cpu, memory and pids (and freezer on v1); {v1}; {v2} \
                     (a v2 controller bound to a v1 hierarchy is not offered on v2)"
                ),
            ),
        }
    }
}

/// A v1 super option that names no controller (`rw`, `name=systemd`, `xattr`, ...).
fn is_mount_option(option: &str) -> bool {
    option.contains('=')
        || matches!(
            option,
            "rw" | "ro" | "xattr" | "noprefix" | "clone_children" | "cpuset_v2_mode" | "favordynmods"
        )
}

/// The mount point, file system type and super options of one `mountinfo` line.
fn parse_line(line: &str) -> Option<(PathBuf, &str, &str)> {
    let (before, after) = line.split_once(" - ")?;
    let mount = before.split(' ').nth(4)?;
    let mut after = after.split(' ');
    let fstype = after.next()?;
    let _source = after.next()?;
    let super_options = after.next().unwrap_or("");
    Some((PathBuf::from(unescape(mount)), fstype, super_options))
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|digits| digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) => {
                out.push(digits.iter().fold(0u8, |value, digit| value.wrapping_mul(8) + (digit - b'0')));
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's shape: v1 controllers, an empty v2 hierarchy beside them.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// Most production hosts: the unified hierarchy alone.
    const UNIFIED: &str = "\
29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn a_hybrid_machine_uses_its_v1_controllers() {
        let cgroups = Cgroups::from_mountinfo(HYBRID, |_| Some(String::new()));
        assert_eq!(cgroups.usable, Some(CgroupVersion::V1));
        assert_eq!(cgroups.v1.len(), 5);
        assert_eq!(cgroups.v1[4].controllers, Vec::<String>::new(), "systemd's options name no controller");
        let check = cgroups.check();
        assert!(check.available, "{check:?}");
        assert!(
            check.detail.contains("using v1") && check.detail.contains("no controllers"),
            "{}",
            check.detail
        );
    }

    #[test]
    fn a_unified_hierarchy_with_the_controllers_is_used_and_without_them_refused() {
        let with = Cgroups::from_mountinfo(UNIFIED, |mount| {
            assert_eq!(mount, Path::new("/sys/fs/cgroup"));
            Some("cpuset cpu io memory hugetlb pids rdma misc\n".to_owned())
        });
        assert_eq!(with.usable, Some(CgroupVersion::V2));
        let without = Cgroups::from_mountinfo(UNIFIED, |_| Some("cpuset io\n".to_owned()));
        assert_eq!(without.usable, None);
        let check = without.check();
        assert!(
            !check.available && check.detail.contains("no hierarchy offers cpu, memory and pids"),
            "{check:?}"
        );
    }

    #[test]
    fn v1_without_a_freezer_cannot_stop_every_process_at_once() {
        let no_freezer: String =
            HYBRID.lines().filter(|line| !line.contains("freezer")).map(|l| format!("{l}\n")).collect();
        assert_eq!(Cgroups::from_mountinfo(&no_freezer, |_| None).usable, None);
    }

    #[test]
    fn escaped_mount_points_are_read_back() {
        let line = "41 31 0:38 / /sys/fs/cgroup/with\\040space rw - cgroup2 cgroup2 rw";
        let cgroups = Cgroups::from_mountinfo(line, |_| None);
        assert_eq!(cgroups.v2.unwrap().mount, Path::new("/sys/fs/cgroup/with space"));
    }
}

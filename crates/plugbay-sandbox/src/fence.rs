//! The landlock fence (the `landlock` crate): a second wall around file access, matching
//! the mounts. Landlock rules name inodes, so the host builds the ruleset before the
//! program starts, on the same files the mounts show (a bind mount shows the same inodes).
//! The file systems made for the program (its `/tmp`, `/proc`) do not exist yet then: the
//! child adds their rules itself, with the access masks prepared here, and restricts
//! itself last.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
};

/// The highest landlock ABI whose rights the fence asks for (the crate lowers it to what
/// the kernel offers).
const FENCE_ABI: ABI = ABI::V5;

/// A ruleset ready for the child, and the masks of the rules the child adds.
#[derive(Debug)]
pub(crate) struct Fence {
    /// The ruleset, holding the host-built rules.
    pub(crate) ruleset: OwnedFd,
    /// Reading and executing (the child's `/proc`).
    pub(crate) read_mask: u64,
    /// Everything (the child's `/tmp`).
    pub(crate) all_mask: u64,
}

/// What the program may reach.
pub(crate) struct Grants<'a> {
    /// Read and execute.
    pub(crate) read: Vec<&'a Path>,
    /// Read, write, create and remove.
    pub(crate) write: Vec<&'a Path>,
    /// Character devices it reads and writes (`/dev/null`, ...).
    pub(crate) devices: Vec<PathBuf>,
}

/// Builds the ruleset; `kernel_abi` is the ABI the kernel reports.
pub(crate) fn build(grants: &Grants<'_>, kernel_abi: i32) -> Result<Fence, String> {
    let abi = std::cmp::min(FENCE_ABI, ABI::from(kernel_abi));
    let all = AccessFs::from_all(abi);
    let read = AccessFs::from_read(abi);
    let device: BitFlags<AccessFs> = read | AccessFs::WriteFile | (all & AccessFs::IoctlDev);
    let rule = |path: &Path, access: BitFlags<AccessFs>| {
        let fd =
            PathFd::new(path).map_err(|error| format!("landlock cannot open {}: {error}", path.display()))?;
        Ok::<_, String>(PathBeneath::new(fd, access))
    };
    let mut ruleset = Ruleset::default()
        .handle_access(all)
        .and_then(|ruleset| ruleset.create())
        .map_err(|error| format!("landlock: {error}"))?;
    for path in &grants.read {
        ruleset = ruleset.add_rule(rule(path, read)?).map_err(|error| format!("landlock: {error}"))?;
    }
    for path in &grants.write {
        ruleset = ruleset.add_rule(rule(path, all)?).map_err(|error| format!("landlock: {error}"))?;
    }
    for path in &grants.devices {
        ruleset = ruleset.add_rule(rule(path, device)?).map_err(|error| format!("landlock: {error}"))?;
    }
    let ruleset: Option<OwnedFd> = ruleset.into();
    let ruleset = ruleset.ok_or_else(|| "landlock: the kernel made no ruleset".to_owned())?;
    Ok(Fence { ruleset, read_mask: read.bits(), all_mask: all.bits() })
}

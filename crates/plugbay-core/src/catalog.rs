//! Scanning a plugins folder: one candidate plugin per sub-folder, with symbolic links
//! that leave the folder refused.

use std::path::{Path, PathBuf};

use crate::error::{Code, Error, Result};

/// A sub-folder of a plugins folder that may hold a plugin.
#[derive(Debug)]
pub struct Candidate {
    /// The folder's name (which must equal the manifest's `plugin.id`).
    pub name: String,
    /// The folder.
    pub folder: PathBuf,
    /// Why it cannot be loaded, when that is known from the scan alone.
    pub problem: Option<Error>,
}

/// Lists the candidates in `root`, sorted by name. Hidden entries (`.name`) and plain files
/// are skipped; a symbolic link is followed only when it stays inside `root`.
///
/// # Errors
/// `not_found` when `root` does not exist or is not a folder.
pub fn scan(root: &Path) -> Result<Vec<Candidate>> {
    let entries = std::fs::read_dir(root).map_err(|error| {
        let code = if error.kind() == std::io::ErrorKind::NotFound {
            Code::NotFound
        } else {
            Code::FailedPrecondition
        };
        Error::new(code, format!("cannot read the plugins folder: {error}")).with_file(root)
    })?;
    let root_real =
        root.canonicalize().map_err(|error| Error::internal(error.to_string()).with_file(root))?;
    let mut candidates = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| Error::internal(error.to_string()).with_file(root))?;
        let folder = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let Ok(kind) = entry.file_type() else { continue };
        let problem = if kind.is_dir() {
            None
        } else if kind.is_symlink() {
            match folder.canonicalize() {
                Ok(real) if real.starts_with(&root_real) && real.is_dir() => None,
                Ok(real) if !real.starts_with(&root_real) => Some(Error::denied(format!(
                    "the plugin folder is a symbolic link to {}, outside the plugins folder {}",
                    real.display(),
                    root.display()
                ))),
                Ok(_) => continue,
                Err(error) => Some(Error::new(Code::NotFound, format!("a broken symbolic link: {error}"))),
            }
        } else {
            continue;
        };
        if entry.file_name().to_str().is_none() {
            let problem = Error::invalid("the folder name is not UTF-8");
            candidates.push(Candidate {
                name,
                folder: folder.clone(),
                problem: Some(problem.with_file(&folder)),
            });
            continue;
        }
        let problem = problem.map(|error| error.with_plugin(name.clone()).with_file(&folder));
        candidates.push(Candidate { name, folder, problem });
    }
    candidates.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(candidates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_folders_and_refuses_outward_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("plugins");
        std::fs::create_dir_all(root.join("b")).unwrap();
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::create_dir_all(root.join(".hidden")).unwrap();
        std::fs::write(root.join("README.md"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("alias")).unwrap();
        let found = scan(&root).unwrap();
        let names: Vec<_> = found.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "alias", "b", "etc"]);
        let etc = found.iter().find(|c| c.name == "etc").unwrap();
        let problem = etc.problem.as_ref().unwrap();
        assert_eq!(problem.code(), Code::PermissionDenied);
        assert!(problem.to_string().contains("outside the plugins folder"), "{problem}");
        assert!(found.iter().filter(|c| c.name != "etc").all(|c| c.problem.is_none()));
        assert_eq!(scan(&dir.path().join("missing")).unwrap_err().code(), Code::NotFound);
    }
}

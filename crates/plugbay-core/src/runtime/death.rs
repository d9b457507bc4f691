//! [`Death`]: how an instance that could die on its own ended, as data.

use std::fmt;

pub use plugbay_sandbox::child::ExitStatus;

/// How an instance that could die on its own ended (see [`super::Instance::died`]).
///
/// The supervisor decides on the data ([`Death::clean`]); people read the `Display`
/// rendering (`the plugin process (pid 12) was killed by signal 9 (SIGKILL); last stderr
/// lines: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Death {
    /// How the program ended; [`ExitStatus::Unknown`] when the host gave it up without
    /// seeing it exit.
    pub exit: ExitStatus,
    /// The program's pid, when a program is what ended.
    pub pid: Option<u32>,
    /// The program's last stderr lines, oldest first.
    pub stderr: Vec<String>,
    /// Why the host ended the instance or gave it up, when it did (failed health checks,
    /// a broken connection), for people. A death with a cause is never clean.
    pub cause: Option<String>,
}

impl Death {
    /// A program that ended on its own, with `exit`.
    pub fn exited(exit: ExitStatus, pid: u32, stderr: Vec<String>) -> Death {
        Death { exit, pid: Some(pid), stderr, cause: None }
    }

    /// An instance the host ended or gave up for `cause`, without an exit status.
    pub fn from_cause(cause: impl Into<String>) -> Death {
        Death { exit: ExitStatus::Unknown, pid: None, stderr: Vec::new(), cause: Some(cause.into()) }
    }

    /// The same death, ended by the host for `why` (added before any cause it has).
    #[must_use]
    pub fn because(mut self, why: impl Into<String>) -> Death {
        let why = why.into();
        self.cause = Some(match self.cause.take() {
            Some(cause) => format!("{why}: {cause}"),
            None => why,
        });
        self
    }

    /// Whether it ended cleanly: the program exited with status 0 on its own. The
    /// `on-failure` restart policy leaves such an instance stopped.
    pub fn clean(&self) -> bool {
        self.cause.is_none() && self.exit.success()
    }
}

impl fmt::Display for Death {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(cause) = &self.cause {
            f.write_str(cause)?;
        }
        if let Some(pid) = self.pid {
            if self.cause.is_some() {
                f.write_str(": ")?;
            }
            write!(f, "the plugin process (pid {pid}) {}", self.exit)?;
        } else if self.cause.is_none() {
            write!(f, "the instance {}", self.exit)?;
        }
        if !self.stderr.is_empty() {
            write!(f, "; last stderr lines: {}", self.stderr.join(" | "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_exit_zero_of_its_own_is_clean() {
        assert!(Death::exited(ExitStatus::Exited(0), 1, Vec::new()).clean());
        assert!(!Death::exited(ExitStatus::Exited(1), 1, Vec::new()).clean());
        assert!(!Death::exited(ExitStatus::Signaled(9), 1, Vec::new()).clean());
        assert!(!Death::exited(ExitStatus::Exited(0), 1, Vec::new()).because("health checks failed").clean());
        assert!(!Death::from_cause("the connection broke").clean());
    }

    #[test]
    fn the_reason_is_rendered_from_the_data() {
        let death = Death::exited(ExitStatus::Signaled(9), 12, vec!["a".into(), "b".into()]);
        assert_eq!(
            death.to_string(),
            "the plugin process (pid 12) was killed by signal 9 (SIGKILL); last stderr lines: a | b"
        );
        assert_eq!(
            death.because("over its deadline").to_string(),
            "over its deadline: the plugin process (pid 12) was killed by signal 9 (SIGKILL); last stderr lines: a | b"
        );
        assert_eq!(Death::from_cause("failed 3 health checks").to_string(), "failed 3 health checks");
        // A program printing the words of a clean exit changes nothing: the data decides.
        let lie = Death::exited(ExitStatus::Exited(1), 3, vec!["exited with exit status: 0".into()]);
        assert!(!lie.clean());
    }
}

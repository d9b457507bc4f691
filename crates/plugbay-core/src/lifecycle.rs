//! The plugin lifecycle: [`State`] and the checked [`State::transition`].
//!
//! ```text
//! Discovered -> Loaded -> Initialized -> Running <-> Draining -> Stopped -> Unloaded
//!      \          \           \            \           \           \
//!       `----------`-----------`------------`-----------`---> Failed -> BackingOff
//!                                                                  \--> Quarantined
//! ```
//! Every transition not in [`State::can_become`] is an error, never a silent no-op.

use std::fmt;

use crate::error::{Error, Result};

/// Where a plugin is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Found in the plugins folder; manifest not yet accepted or artifact not yet loaded.
    Discovered,
    /// The artifact is loaded and checked (ABI, description); no instance yet.
    Loaded,
    /// An instance exists (init succeeded) but takes no calls yet.
    Initialized,
    /// Takes calls.
    Running,
    /// Takes no new calls; calls in flight finish.
    Draining,
    /// No instance; the artifact may still be loaded.
    Stopped,
    /// Released; the plugin is only remembered by id.
    Unloaded,
    /// Something went wrong; the error says what.
    Failed,
    /// Waiting before the next restart attempt.
    BackingOff,
    /// Failed too often; no more attempts until an operator acts or the artifact changes.
    Quarantined,
}

impl State {
    /// Every state, for tables and tests.
    pub const ALL: [State; 10] = [
        State::Discovered,
        State::Loaded,
        State::Initialized,
        State::Running,
        State::Draining,
        State::Stopped,
        State::Unloaded,
        State::Failed,
        State::BackingOff,
        State::Quarantined,
    ];

    /// Whether `self -> next` is a legal transition.
    pub fn can_become(self, next: State) -> bool {
        use State::*;
        match self {
            // Discovered => (Loaded | Failed | Unloaded)
            Discovered => matches!(next, Loaded | Failed | Unloaded),
            // Loaded => (Initialized | Failed | Unloaded)
            Loaded => matches!(next, Initialized | Failed | Unloaded),
            // Initialized => (Running | Stopped | Failed)
            Initialized => matches!(next, Running | Stopped | Failed),
            // Running => (Draining | Failed)
            Running => matches!(next, Draining | Failed),
            // Draining => (Running | Stopped | Failed)
            Draining => matches!(next, Running | Stopped | Failed),
            // Stopped => (Initialized | Unloaded | Failed): start again, or release
            Stopped => matches!(next, Initialized | Unloaded | Failed),
            // Unloaded => (Discovered): loaded again from its folder
            Unloaded => matches!(next, Discovered),
            // Failed => (Discovered | BackingOff | Quarantined | Unloaded)
            Failed => matches!(next, Discovered | BackingOff | Quarantined | Unloaded),
            // BackingOff => (Discovered | Unloaded | Quarantined)
            BackingOff => matches!(next, Discovered | Unloaded | Quarantined),
            // Quarantined => (Discovered | Unloaded): an operator or a changed artifact lifts it
            Quarantined => matches!(next, Discovered | Unloaded),
        }
    }

    /// Checks `self -> next`.
    ///
    /// # Errors
    /// `failed_precondition` naming both states when the transition is not legal.
    pub fn transition(self, next: State) -> Result<State> {
        if self.can_become(next) {
            Ok(next)
        } else {
            Err(Error::precondition(format!("illegal lifecycle transition {self} -> {next}")))
        }
    }

    /// The lower-case name (`running`).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Discovered => "discovered",
            State::Loaded => "loaded",
            State::Initialized => "initialized",
            State::Running => "running",
            State::Draining => "draining",
            State::Stopped => "stopped",
            State::Unloaded => "unloaded",
            State::Failed => "failed",
            State::BackingOff => "backing_off",
            State::Quarantined => "quarantined",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Code;

    /// The legal pairs, written out once more by hand so a change to `can_become` has to be
    /// made twice on purpose.
    const LEGAL: &[(State, State)] = {
        use State::*;
        &[
            (Discovered, Loaded),
            (Discovered, Failed),
            (Discovered, Unloaded),
            (Loaded, Initialized),
            (Loaded, Failed),
            (Loaded, Unloaded),
            (Initialized, Running),
            (Initialized, Stopped),
            (Initialized, Failed),
            (Running, Draining),
            (Running, Failed),
            (Draining, Running),
            (Draining, Stopped),
            (Draining, Failed),
            (Stopped, Initialized),
            (Stopped, Unloaded),
            (Stopped, Failed),
            (Unloaded, Discovered),
            (Failed, Discovered),
            (Failed, BackingOff),
            (Failed, Quarantined),
            (Failed, Unloaded),
            (BackingOff, Discovered),
            (BackingOff, Unloaded),
            (BackingOff, Quarantined),
            (Quarantined, Discovered),
            (Quarantined, Unloaded),
        ]
    };

    #[test]
    fn every_pair_is_legal_exactly_when_listed() {
        let mut illegal = 0;
        for from in State::ALL {
            for to in State::ALL {
                let legal = LEGAL.contains(&(from, to));
                match from.transition(to) {
                    Ok(state) => {
                        assert!(legal, "{from} -> {to} was accepted but is not in the table");
                        assert_eq!(state, to);
                    }
                    Err(error) => {
                        assert!(!legal, "{from} -> {to} was refused but is in the table");
                        assert_eq!(error.code(), Code::FailedPrecondition);
                        assert!(error.message().contains(&format!("{from} -> {to}")), "{error}");
                        illegal += 1;
                    }
                }
            }
        }
        assert_eq!(illegal, State::ALL.len() * State::ALL.len() - LEGAL.len());
    }

    #[test]
    fn no_state_may_become_itself() {
        for state in State::ALL {
            assert!(!state.can_become(state), "{state} -> {state} must be an error, not a no-op");
        }
    }
}

//! Whether a plugin folder may run: its signature judged against the host's trust store and
//! policy ([`crate::trust`]), on the bytes the host read and will run.

use std::path::Path;

use super::HostInner;
use crate::call::Payload;
use crate::error::Result;
use crate::events::{ALERT_TOPIC, Alert, Event};
use crate::trust::{self, FileDigest, SignatureInfo, SignatureState, TrustPolicy};

/// The bytes the host read and will run: the manifest's digest (it is small and always
/// taken) and the artifact's bytes, hashed only when the folder is signed.
pub(super) struct ReadBytes<'a> {
    /// `plugin.toml` as it was parsed.
    pub manifest: &'a FileDigest,
    /// The artifact's path below the folder and its bytes (`None` when its runtime does
    /// not read them: the file is then digested where it lies).
    pub artifact: Option<(&'a str, &'a [u8])>,
}

impl HostInner {
    /// Judges plugin `id`'s folder: the finding to keep, or (under `require`) the refusal.
    /// A finding other than valid under `warn` is logged as a warning and published as a
    /// `signature_warning` alert once the host trusts any key (with no trust store, it is
    /// logged at info: every plugin is then unsigned or signed by a stranger).
    ///
    /// # Errors
    /// `permission_denied` naming the plugin, the file and the reason (see
    /// [`trust::admit`]); `failed_precondition` when the folder cannot be read.
    pub(super) fn admit(&self, folder: &Path, id: &str, read: ReadBytes<'_>) -> Result<SignatureInfo> {
        let config = &self.config.trust;
        let pinned = || {
            let mut pinned = vec![read.manifest.clone()];
            if let Some((path, bytes)) = read.artifact {
                pinned.push(FileDigest::of(path, bytes));
            }
            pinned
        };
        let found = trust::examine(config, folder, id, pinned).map_err(|error| error.with_plugin(id))?;
        let found = trust::admit(config, folder, id, found)?;
        let admitted_unsigned = found.state == SignatureState::Unsigned && found.reason.is_some();
        if (config.policy == TrustPolicy::Warn && found.state != SignatureState::Valid) || admitted_unsigned {
            let reason = format!("loaded with signature {}", found.summary());
            if config.keys.is_empty() {
                // No trust store: nothing could be valid, and a warning per plugin would
                // say only that. The finding is still shown (`plugbay list`, the APIs).
                tracing::info!(plugin = %id, "{reason} (no trusted keys are configured)");
                return Ok(found);
            }
            tracing::warn!(plugin = %id, "{reason}");
            let alert = Alert { plugin: id.to_owned(), kind: "signature_warning".into(), reason };
            let payload = Payload::json(&alert).unwrap_or_default();
            let _ = self.publish(Event::new(ALERT_TOPIC, "signature_warning", payload, "host"));
        }
        Ok(found)
    }
}

//! The trust store and its policy: which keys this host accepts, for which plugins, and
//! what becomes of a plugin whose folder is unsigned or badly signed.
//!
//! [`TrustConfig`] is plain data ([`crate::HostConfig::trust`], `[trust]` in `plugbay.toml`).
//! [`examine`] reads a folder's signature against it into a [`SignatureInfo`]; [`admit`]
//! applies the policy to that finding: under `require` anything but a valid signature by a
//! trusted, unrevoked key whose scope holds the plugin is `permission_denied`.

use std::path::Path;

use crate::error::{Code, Error, Result};
use crate::trust::digest::FileDigest;
use crate::trust::keys::{KeyId, PublicKey};
use crate::trust::signature::{Problem, SIGNATURE_FILE, verify_pinned};

/// What the host does with a plugin that is not validly signed by a trusted key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrustPolicy {
    /// Signatures are not read.
    Off,
    /// Signatures are read and shown; an unsigned or badly signed plugin loads with a
    /// warning.
    #[default]
    Warn,
    /// Fails closed: only a valid signature by a trusted key in scope loads (or, unsigned,
    /// a plugin listed in [`TrustConfig::allow_unsigned`]).
    Require,
}

impl TrustPolicy {
    /// The policy as `plugbay.toml` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            TrustPolicy::Off => "off",
            TrustPolicy::Warn => "warn",
            TrustPolicy::Require => "require",
        }
    }
}

/// A public key the host trusts, and the plugins it may sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// The key (its name is the signer shown for the plugins it signed).
    pub key: PublicKey,
    /// Plugin ids this key may sign: an exact id (`text-tools`), or a prefix ending in `*`
    /// (`acme-*`). Empty: any plugin.
    pub scope: Vec<String>,
}

impl TrustedKey {
    /// A key trusted for any plugin.
    pub fn new(key: PublicKey) -> TrustedKey {
        TrustedKey { key, scope: Vec::new() }
    }

    /// Limits the key to these ids and prefixes (see [`TrustedKey::scope`]).
    pub fn with_scope(mut self, scope: Vec<String>) -> TrustedKey {
        self.scope = scope;
        self
    }

    /// Whether this key may sign plugin `id`.
    pub fn may_sign(&self, id: &str) -> bool {
        self.scope.is_empty()
            || self.scope.iter().any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => id.starts_with(prefix),
                None => pattern == id,
            })
    }
}

/// The trust store and policy ([`crate::HostConfig::trust`]; `docs/trust.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrustConfig {
    /// What becomes of a plugin not validly signed by a trusted key. Default:
    /// [`TrustPolicy::Warn`] (the daemon makes it `require` once any key is configured).
    pub policy: TrustPolicy,
    /// The keys whose signatures count. Default: none.
    pub keys: Vec<TrustedKey>,
    /// Key ids whose signatures never count again, whatever the store says. Default: none.
    pub revoked: Vec<KeyId>,
    /// Plugin ids that may load unsigned under `require`, for development. A *bad*
    /// signature is never admitted by this list. Default: none.
    pub allow_unsigned: Vec<String>,
}

impl TrustConfig {
    /// A store with `policy` and nothing else.
    pub fn with_policy(policy: TrustPolicy) -> TrustConfig {
        TrustConfig { policy, ..TrustConfig::default() }
    }

    /// Adds a trusted key.
    pub fn with_key(mut self, key: TrustedKey) -> TrustConfig {
        self.keys.push(key);
        self
    }

    /// Sets the revoked key ids (see [`TrustConfig::revoked`]).
    pub fn with_revoked(mut self, revoked: Vec<KeyId>) -> TrustConfig {
        self.revoked = revoked;
        self
    }

    /// Sets the ids that may load unsigned (see [`TrustConfig::allow_unsigned`]).
    pub fn with_allow_unsigned(mut self, allow_unsigned: Vec<String>) -> TrustConfig {
        self.allow_unsigned = allow_unsigned;
        self
    }

    /// Checks the scopes, revoked ids and allowed ids; has no side effects.
    ///
    /// # Errors
    /// `invalid_argument` naming the field (`trust.keys[N].scope`, `trust.revoked`,
    /// `trust.allow_unsigned`) and the entry.
    pub fn validate(&self) -> Result<()> {
        for (index, key) in self.keys.iter().enumerate() {
            for pattern in &key.scope {
                let id = pattern.strip_suffix('*').unwrap_or(pattern);
                let prefix_ok = pattern.ends_with('*') && (id.is_empty() || id_characters(id));
                if !prefix_ok && crate::manifest::validate_id(id).is_err() {
                    return Err(Error::invalid(format!(
                        "{pattern:?} is neither a plugin id nor an id prefix ending in `*`"
                    ))
                    .with_field(format!("trust.keys[{index}].scope")));
                }
            }
        }
        for id in &self.revoked {
            if id.0.len() != 16 || !id.0.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(Error::invalid(format!("{:?} is not a key id (16 hex digits)", id.0))
                    .with_field("trust.revoked"));
            }
        }
        for id in &self.allow_unsigned {
            crate::manifest::validate_id(id).map_err(|error| error.with_field("trust.allow_unsigned"))?;
        }
        Ok(())
    }

    fn is_revoked(&self, id: &KeyId) -> bool {
        self.revoked.iter().any(|revoked| revoked.0.eq_ignore_ascii_case(&id.0))
    }
}

fn id_characters(text: &str) -> bool {
    text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// What the host found of a plugin's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureState {
    /// Signed by a trusted key in scope, and the folder is exactly what it signed.
    Valid,
    /// The folder has no `plugin.sig`.
    Unsigned,
    /// Signed, but not in a way this host accepts (the reason says why).
    Invalid,
    /// Not read: the trust policy is `off`.
    Unchecked,
}

impl SignatureState {
    /// The state as shown (`valid`, `unsigned`, `invalid`, `unchecked`).
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureState::Valid => "valid",
            SignatureState::Unsigned => "unsigned",
            SignatureState::Invalid => "invalid",
            SignatureState::Unchecked => "unchecked",
        }
    }
}

/// A plugin's signature as the host judged it when it loaded the plugin.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct SignatureInfo {
    /// Valid, unsigned, invalid or unchecked.
    pub state: SignatureState,
    /// The signer: the trusted key's name (valid signatures only).
    pub signer: Option<String>,
    /// The key id the signature names, when there is one.
    pub key_id: Option<KeyId>,
    /// Why it is not valid, or how an unsigned plugin was admitted.
    pub reason: Option<String>,
    /// The file the reason is about, beneath the plugin folder (`plugin.sig` or a changed,
    /// added or removed file).
    pub file: Option<String>,
}

impl SignatureInfo {
    fn new(state: SignatureState) -> SignatureInfo {
        SignatureInfo { state, signer: None, key_id: None, reason: None, file: None }
    }

    fn invalid(key_id: Option<KeyId>, file: &str, reason: String) -> SignatureInfo {
        SignatureInfo {
            state: SignatureState::Invalid,
            signer: None,
            key_id,
            reason: Some(reason),
            file: Some(file.to_owned()),
        }
    }

    /// One line: `valid (signer NAME, key ID)`, `unsigned`, `invalid: REASON`, `unchecked`.
    pub fn summary(&self) -> String {
        let mut text = self.state.as_str().to_owned();
        if let Some(signer) = &self.signer {
            text.push_str(&format!(" (signer {signer}"));
            if let Some(key) = &self.key_id {
                text.push_str(&format!(", key {key}"));
            }
            text.push(')');
        }
        if let Some(reason) = &self.reason {
            text.push_str(&format!(": {reason}"));
        }
        text
    }
}

/// Reads `folder`'s signature against `config`'s store for plugin `id`. The files in
/// `pinned` (called only when the folder is signed) are judged by the digests given, those
/// of the bytes the host has read and will run, not by reading them again.
///
/// # Errors
/// Only when the folder cannot be read (`failed_precondition`); every finding about the
/// signature itself is in the returned [`SignatureInfo`].
pub fn examine(
    config: &TrustConfig,
    folder: &Path,
    id: &str,
    pinned: impl FnOnce() -> Vec<FileDigest>,
) -> Result<SignatureInfo> {
    if config.policy == TrustPolicy::Off {
        return Ok(SignatureInfo::new(SignatureState::Unchecked));
    }
    let verification = match verify_pinned(folder, pinned) {
        Ok(verification) => verification,
        Err(error) if error.code() == Code::NotFound => {
            return Ok(SignatureInfo::new(SignatureState::Unsigned));
        }
        Err(error) if error.code() == Code::InvalidArgument => {
            return Ok(SignatureInfo::invalid(None, SIGNATURE_FILE, error.message().to_owned()));
        }
        Err(error) => return Err(error),
    };
    let key_id = Some(verification.key_id.clone());
    if let Some(first) = verification.problems.first() {
        let reasons: Vec<String> = verification.problems.iter().map(Problem::to_string).collect();
        return Ok(SignatureInfo::invalid(
            key_id,
            first.path().unwrap_or(SIGNATURE_FILE),
            reasons.join("; "),
        ));
    }
    let key = &verification.key_id;
    if config.is_revoked(key) {
        return Ok(SignatureInfo::invalid(
            key_id,
            SIGNATURE_FILE,
            format!("signed by key {key}, which is revoked"),
        ));
    }
    let trusted = config.keys.iter().find(|trusted| {
        trusted.key.id == *key && trusted.key.to_hex().eq_ignore_ascii_case(&verification.public_key)
    });
    let Some(trusted) = trusted else {
        return Ok(SignatureInfo::invalid(
            key_id,
            SIGNATURE_FILE,
            format!("signed by key {key}, which is not in this host's trust store"),
        ));
    };
    if !trusted.may_sign(id) {
        return Ok(SignatureInfo::invalid(
            key_id,
            SIGNATURE_FILE,
            format!(
                "signed by key {key} ({}), which may sign only {} and not {id}",
                trusted.key.name,
                trusted.scope.join(", ")
            ),
        ));
    }
    Ok(SignatureInfo {
        state: SignatureState::Valid,
        signer: Some(trusted.key.name.clone()),
        key_id,
        reason: None,
        file: None,
    })
}

/// Applies the policy to what [`examine`] found for plugin `id` in `folder`: the finding
/// to keep (an unsigned plugin admitted by the allow-list says so), or the refusal.
///
/// # Errors
/// Under `require`: `permission_denied` naming the plugin, the file and the reason, for
/// an unsigned plugin not in `allow_unsigned` and for every invalid signature.
pub fn admit(
    config: &TrustConfig,
    folder: &Path,
    id: &str,
    mut found: SignatureInfo,
) -> Result<SignatureInfo> {
    if config.policy != TrustPolicy::Require {
        return Ok(found);
    }
    match found.state {
        SignatureState::Valid | SignatureState::Unchecked => Ok(found),
        SignatureState::Unsigned if config.allow_unsigned.iter().any(|allowed| allowed == id) => {
            found.reason = Some("admitted unsigned by trust.allow_unsigned".to_owned());
            Ok(found)
        }
        SignatureState::Unsigned => Err(Error::new(
            Code::PermissionDenied,
            format!(
                "the plugin is not signed and trust.policy is require: sign it (plugbay sign) with a \
                 trusted key, or, for development, list {id} in trust.allow_unsigned"
            ),
        )
        .with_plugin(id)
        .with_file(folder.join(SIGNATURE_FILE))),
        SignatureState::Invalid => {
            let file = found.file.as_deref().unwrap_or(SIGNATURE_FILE);
            let reason = found.reason.as_deref().unwrap_or("the signature is not valid");
            Err(Error::new(Code::PermissionDenied, format!("refused by trust.policy require: {reason}"))
                .with_plugin(id)
                .with_file(folder.join(file)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> PublicKey {
        crate::trust::PrivateKey::generate(name).unwrap().public()
    }

    #[test]
    fn scopes_are_ids_or_prefixes() {
        let trusted = TrustedKey::new(key("acme")).with_scope(vec!["acme-*".into(), "kv".into()]);
        assert!(trusted.may_sign("acme-tools") && trusted.may_sign("kv"));
        assert!(!trusted.may_sign("kv-store") && !trusted.may_sign("other"));
        assert!(TrustedKey::new(key("any")).may_sign("anything"));
    }

    #[test]
    fn bad_scopes_revoked_ids_and_allowed_ids_are_named() {
        let scoped = |scope: &str| {
            TrustConfig::default().with_key(TrustedKey::new(key("k")).with_scope(vec![scope.into()]))
        };
        scoped("acme-*").validate().unwrap();
        scoped("*").validate().unwrap();
        let error = scoped("Acme").validate().unwrap_err();
        assert_eq!(error.field(), Some("trust.keys[0].scope"), "{error}");
        let error = TrustConfig::default().with_revoked(vec![KeyId("xyz".into())]).validate().unwrap_err();
        assert_eq!(error.field(), Some("trust.revoked"), "{error}");
        let error =
            TrustConfig::default().with_allow_unsigned(vec!["No Such".into()]).validate().unwrap_err();
        assert_eq!(error.field(), Some("trust.allow_unsigned"), "{error}");
    }
}

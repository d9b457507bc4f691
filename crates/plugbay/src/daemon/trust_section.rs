//! `[trust]` of `plugbay.toml`: the keys this daemon accepts, their scopes, revoked keys,
//! unsigned plugins allowed for development, and the policy (docs/trust.md).

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use plugbay_core::trust::{KeyId, PublicKey, TrustConfig, TrustPolicy, TrustedKey};
use serde::Deserialize;

/// `[trust]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TrustSection {
    /// `off`, `warn` or `require`; default `require` when any key is listed, else `warn`.
    policy: Option<TrustPolicy>,
    #[serde(default)]
    keys: Vec<KeySection>,
    #[serde(default)]
    revoked: Vec<String>,
    #[serde(default)]
    allow_unsigned: Vec<String>,
}

/// One `[[trust.keys]]`: a public key file (`plugbay key new` writes one) or the key in
/// hex with a name, and the plugin ids it may sign.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeySection {
    file: Option<PathBuf>,
    public_key: Option<String>,
    name: Option<String>,
    #[serde(default)]
    scope: Vec<String>,
}

impl TrustSection {
    /// The host's trust settings; `origin` names the config file in errors.
    pub(super) fn into_config(self, origin: &str) -> anyhow::Result<TrustConfig> {
        let mut keys = Vec::new();
        for (index, key) in self.keys.into_iter().enumerate() {
            let field = format!("{origin}: trust.keys[{index}]");
            let mut public = match (key.file, key.public_key) {
                (Some(file), None) => PublicKey::read(&file).with_context(|| format!("{field}.file"))?,
                (None, Some(hex)) => {
                    let name = key.name.as_deref().unwrap_or("unnamed");
                    PublicKey::from_hex(&hex, name).with_context(|| format!("{field}.public_key"))?
                }
                _ => bail!(
                    "{field}: give exactly one of `file` (a public key file) or `public_key` (64 hex digits)"
                ),
            };
            if let Some(name) = key.name {
                public.name = name;
            }
            keys.push(TrustedKey::new(public).with_scope(key.scope));
        }
        let policy =
            self.policy.unwrap_or(if keys.is_empty() { TrustPolicy::Warn } else { TrustPolicy::Require });
        let mut config = TrustConfig::with_policy(policy)
            .with_revoked(self.revoked.into_iter().map(|id| KeyId(id.to_ascii_lowercase())).collect())
            .with_allow_unsigned(self.allow_unsigned);
        for key in keys {
            config = config.with_key(key);
        }
        config.validate().with_context(|| format!("{origin}: the trust settings are not valid"))?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use plugbay_core::trust::PrivateKey;

    use super::*;

    fn section(text: &str) -> anyhow::Result<TrustConfig> {
        let section: TrustSection = toml::from_str(text)?;
        section.into_config("plugbay.toml")
    }

    #[test]
    fn a_listed_key_makes_the_policy_require_unless_it_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let (_, public) = PrivateKey::generate("release").unwrap().write_pair(dir.path()).unwrap();
        let file = format!("[[keys]]\nfile = {:?}\nscope = [\"acme-*\"]\n", public.display().to_string());
        let config = section(&file).unwrap();
        assert_eq!(config.policy, TrustPolicy::Require);
        assert_eq!(
            (config.keys[0].key.name.as_str(), config.keys[0].scope.as_slice()),
            ("release", &["acme-*".to_owned()][..])
        );
        assert_eq!(section(&format!("policy = \"warn\"\n{file}")).unwrap().policy, TrustPolicy::Warn);
        assert_eq!(section("").unwrap().policy, TrustPolicy::Warn);
    }

    #[test]
    fn a_key_needs_one_source_and_bad_entries_name_their_field() {
        let error = section("[[keys]]\nscope = []\n").unwrap_err().to_string();
        assert!(error.contains("trust.keys[0]: give exactly one of `file`"), "{error}");
        let error = format!("{:#}", section("[[keys]]\npublic_key = \"abc\"\n").unwrap_err());
        assert!(error.contains("trust.keys[0].public_key"), "{error}");
        let hex = PrivateKey::generate("p").unwrap().public().to_hex();
        let error = format!(
            "{:#}",
            section(&format!("[[keys]]\npublic_key = \"{hex}\"\nscope = [\"No\"]\n")).unwrap_err()
        );
        assert!(error.contains("trust.keys[0].scope"), "{error}");
        let error = format!("{:#}", section("revoked = [\"zz\"]\n").unwrap_err());
        assert!(error.contains("trust.revoked"), "{error}");
        let error = section("policy = \"maybe\"\n").unwrap_err().to_string();
        assert!(error.contains("unknown variant"), "{error}");
    }
}

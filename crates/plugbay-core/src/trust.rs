//! Trust: who signed a plugin folder, and whether its files are still the ones signed.
//!
//! A signer holds an ed25519 key pair ([`keys`]): `plugbay key new NAME` writes one. `plugbay
//! sign DIR --key FILE` writes `DIR/plugin.sig` ([`signature`]): the plugin's id and version,
//! the signer's key id and public key, when it was made (and until when it holds), and the
//! path, size and SHA-256 of **every** file in the folder, `plugin.toml` included, all under
//! one signature; an added, removed or changed file breaks it. [`verify_folder`] reads it
//! back and lists every difference. `docs/trust.md` writes the format down for other tools.
//!
//! ```no_run
//! use plugbay_core::trust::{self, PrivateKey};
//! # fn main() -> plugbay_core::Result<()> {
//! let key = PrivateKey::read("keys/release.key".as_ref())?;
//! trust::sign_folder("plugins/text-tools".as_ref(), &key, None)?;
//! let verification = trust::verify_folder("plugins/text-tools".as_ref())?;
//! assert!(verification.is_valid(), "{:?}", verification.problems);
//! # Ok(())
//! # }
//! ```

mod digest;
pub mod keys;
pub mod policy;
pub mod signature;

pub use digest::FileDigest;
pub use keys::{KeyId, PrivateKey, PublicKey};
pub use policy::{SignatureInfo, SignatureState, TrustConfig, TrustPolicy, TrustedKey, admit, examine};
pub use signature::{Problem, SIGNATURE_FILE, Verification, sign_folder, verify_folder};

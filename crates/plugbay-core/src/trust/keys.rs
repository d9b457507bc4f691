//! ed25519 key pairs in files.
//!
//! A private key file holds one line, `plugbay-ed25519-private-v1 <seed> <name>`, the seed
//! being the 32-byte ed25519 secret in hex; it is created with mode 0600 and never
//! overwritten. A public key file holds `plugbay-ed25519-public-v1 <key> <name>`, the key
//! being the 32-byte public key in hex. A key's id is the first 8 bytes of the SHA-256 of
//! its public key, in hex: short enough to read, long enough that two keys never share one
//! by chance.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use crate::error::{Code, Error, Result};
use crate::trust::digest::{from_hex, hex, sha256_hex};

/// The first word of a private key file.
const PRIVATE_TAG: &str = "plugbay-ed25519-private-v1";
/// The first word of a public key file.
const PUBLIC_TAG: &str = "plugbay-ed25519-public-v1";

/// A key's id: the first 8 bytes of the SHA-256 of its public key, 16 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct KeyId(pub String);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A signer's private key, with the name it was made under.
pub struct PrivateKey {
    /// The name given to `plugbay key new`.
    pub name: String,
    key: SigningKey,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("PrivateKey").field("name", &self.name).field("id", &self.public().id).finish()
    }
}

/// A public key, with its name when it came from a file that has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The key's name (from its file; empty when it came without one).
    pub name: String,
    /// Its id.
    pub id: KeyId,
    key: VerifyingKey,
}

impl PrivateKey {
    /// A new key pair from the operating system's random source.
    ///
    /// # Errors
    /// `internal` when the system has no randomness to give (`getrandom` failed).
    pub fn generate(name: &str) -> Result<PrivateKey> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|error| {
            Error::internal(format!("cannot draw a key from the system's random source: {error}"))
        })?;
        Ok(PrivateKey { name: name.to_owned(), key: SigningKey::from_bytes(&seed) })
    }

    /// Writes the pair as `dir/NAME.key` (mode 0600) and `dir/NAME.pub`, refusing to replace
    /// either, and returns both paths.
    ///
    /// # Errors
    /// `invalid_argument` for a name that is not a plain file name; `already_exists`-like
    /// `failed_precondition` when either file exists; `failed_precondition` when a file
    /// cannot be written. A failure leaves neither file behind.
    pub fn write_pair(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        check_name(&self.name)?;
        let private = dir.join(format!("{}.key", self.name));
        let public = dir.join(format!("{}.pub", self.name));
        for path in [&private, &public] {
            if path.exists() {
                return Err(Error::new(Code::FailedPrecondition, "refusing to replace an existing key file")
                    .with_file(path));
            }
        }
        let seed = hex(self.key.as_bytes());
        write_new(&private, &format!("{PRIVATE_TAG} {seed} {}\n", self.name), 0o600)?;
        if let Err(error) = write_new(&public, &self.public().to_line(), 0o644) {
            let _ = std::fs::remove_file(&private);
            return Err(error);
        }
        Ok((private, public))
    }

    /// Reads a private key file.
    ///
    /// # Errors
    /// `failed_precondition` when it cannot be read, `invalid_argument` when it is not a
    /// private key file; both name the file.
    pub fn read(path: &Path) -> Result<PrivateKey> {
        let (seed, name) = read_line(path, PRIVATE_TAG)?;
        Ok(PrivateKey { name, key: SigningKey::from_bytes(&seed) })
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey::from_verifying(self.key.verifying_key(), self.name.clone())
    }

    /// The ed25519 signature of `message`.
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

impl PublicKey {
    fn from_verifying(key: VerifyingKey, name: String) -> PublicKey {
        let id = KeyId(sha256_hex(key.as_bytes())[..16].to_owned());
        PublicKey { name, id, key }
    }

    /// A public key from its 64 hex digits.
    ///
    /// # Errors
    /// `invalid_argument` when the text is not 32 bytes of hex or not a valid ed25519 key.
    pub fn from_hex(text: &str, name: &str) -> Result<PublicKey> {
        let bytes = from_hex::<32>(text.trim())
            .ok_or_else(|| Error::invalid("a public key is 64 hex digits (32 bytes)"))?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|error| Error::invalid(format!("not an ed25519 public key: {error}")))?;
        Ok(PublicKey::from_verifying(key, name.to_owned()))
    }

    /// Reads a public key file.
    ///
    /// # Errors
    /// As [`PrivateKey::read`].
    pub fn read(path: &Path) -> Result<PublicKey> {
        let (bytes, name) = read_line(path, PUBLIC_TAG)?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|error| Error::invalid(format!("not an ed25519 public key: {error}")).with_file(path))?;
        Ok(PublicKey::from_verifying(key, name))
    }

    /// The key as 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex(self.key.as_bytes())
    }

    /// The line of its public key file.
    pub fn to_line(&self) -> String {
        format!("{PUBLIC_TAG} {} {}\n", self.to_hex(), self.name)
    }

    /// Whether `signature` is this key's (strict ed25519 verification) of `message`.
    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature)).is_ok()
    }
}

/// A key name: a plain file name of letters, digits, `-`, `_` and `.`, not starting with `.`.
fn check_name(name: &str) -> Result<()> {
    let plain = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if plain {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "the key name {name:?} must be 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"
        )))
    }
}

/// Writes a file that must not exist yet, with `mode` from its creation on.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let cannot = |error: std::io::Error| {
        Error::new(Code::FailedPrecondition, format!("cannot write the key file: {error}")).with_file(path)
    };
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(cannot)?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(|error| {
        let _ = std::fs::remove_file(path);
        cannot(error)
    })
}

/// The 32 bytes and the name of a key file's line, which must start with `tag`.
fn read_line(path: &Path, tag: &str) -> Result<([u8; 32], String)> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        Error::new(Code::FailedPrecondition, format!("cannot read the key file: {error}")).with_file(path)
    })?;
    let mut words = text.trim_end().splitn(3, ' ');
    let found = words.next().unwrap_or_default();
    if found != tag {
        let other = if tag == PRIVATE_TAG { PUBLIC_TAG } else { PRIVATE_TAG };
        let hint =
            if found == other { format!(" (this is a {} key file)", kind(other)) } else { String::new() };
        return Err(Error::invalid(format!("not a {} key file: it must start with {tag}{hint}", kind(tag)))
            .with_file(path));
    }
    let bytes = words.next().and_then(from_hex::<32>).ok_or_else(|| {
        Error::invalid("the key must be 64 hex digits after the first word").with_file(path)
    })?;
    Ok((bytes, words.next().unwrap_or_default().to_owned()))
}

fn kind(tag: &str) -> &'static str {
    if tag == PRIVATE_TAG { "private" } else { "public" }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_pair_is_written_private_key_0600_never_replaced_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKey::generate("release").unwrap();
        let (private, public) = key.write_pair(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&private).unwrap().permissions().mode() & 0o777, 0o600);
        let read = PrivateKey::read(&private).unwrap();
        assert_eq!(read.public(), key.public());
        assert_eq!(PublicKey::read(&public).unwrap(), key.public());
        assert_eq!(key.public().id.0.len(), 16);

        let again = PrivateKey::generate("release").unwrap().write_pair(dir.path()).unwrap_err();
        assert!(again.to_string().contains("refusing to replace"), "{again}");
        assert_eq!(PrivateKey::read(&private).unwrap().public(), key.public(), "the old key is intact");
    }

    #[test]
    fn a_signature_verifies_with_its_key_only() {
        let key = PrivateKey::generate("a").unwrap();
        let other = PrivateKey::generate("b").unwrap();
        let signature = key.sign(b"message");
        assert!(key.public().verifies(b"message", &signature));
        assert!(!key.public().verifies(b"messagf", &signature));
        assert!(!other.public().verifies(b"message", &signature));
    }

    #[test]
    fn bad_key_files_and_names_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKey::generate("k").unwrap();
        let (private, public) = key.write_pair(dir.path()).unwrap();
        let swapped = PrivateKey::read(&public).unwrap_err().to_string();
        assert!(swapped.contains("this is a public key file"), "{swapped}");
        assert!(PublicKey::read(&private).unwrap_err().to_string().contains("this is a private key file"));
        std::fs::write(dir.path().join("short.pub"), "plugbay-ed25519-public-v1 abcd x\n").unwrap();
        let short = PublicKey::read(&dir.path().join("short.pub")).unwrap_err().to_string();
        assert!(short.contains("64 hex digits") && short.contains("short.pub"), "{short}");
        for name in ["", "../x", ".hidden", "a b"] {
            assert!(PrivateKey::generate(name).unwrap().write_pair(dir.path()).is_err(), "{name:?}");
        }
    }
}

//! `plugin.sig`: what a signer says about a plugin folder, and checking it.
//!
//! The file is a JSON object (`docs/trust.md` shows one):
//!
//! | field        | value                                                              |
//! |--------------|--------------------------------------------------------------------|
//! | `format`     | `plugbay-signature-v1`                                             |
//! | `plugin`     | the plugin id of `plugin.toml`                                     |
//! | `version`    | its version                                                        |
//! | `key_id`     | the signer's key id (16 hex digits)                                |
//! | `public_key` | the signer's public key (64 hex digits)                            |
//! | `created`    | when it was signed, seconds since 1970-01-01 UTC                   |
//! | `expires`    | until when it holds, the same way, or `null` for no end            |
//! | `files`      | every file but `plugin.sig`: `{"path", "size", "sha256"}`, sorted by path |
//! | `signature`  | the ed25519 signature of the statement below, 128 hex digits       |
//!
//! The statement is UTF-8 text, one item per line, each line ending in `\n`:
//! `plugbay-signature-v1`, `plugin <id>`, `version <version>`, `key <key id>`, `created
//! <seconds>`, `expires <seconds or never>`, then `file <sha256> <size> <path>` per file in
//! the order of `files`. Only the statement is signed; the JSON around it is checked
//! against it field by field.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Code, Error, Result};
use crate::manifest::Manifest;
use crate::trust::digest::{FileDigest, digest_folder, from_hex, hex};
use crate::trust::keys::{KeyId, PrivateKey, PublicKey};

/// The signature's file name in a plugin folder.
pub const SIGNATURE_FILE: &str = "plugin.sig";
/// The format's name, the first line of the statement and the `format` field.
const FORMAT: &str = "plugbay-signature-v1";
/// The largest `plugin.sig` read.
const MAX_SIGNATURE_BYTES: u64 = 4 << 20;

/// `plugin.sig` as it is stored.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureFile {
    format: String,
    plugin: String,
    version: String,
    key_id: KeyId,
    public_key: String,
    created: u64,
    expires: Option<u64>,
    files: Vec<FileDigest>,
    signature: String,
}

impl SignatureFile {
    /// The signed statement.
    fn statement(&self) -> String {
        let mut text =
            format!("{FORMAT}\nplugin {}\nversion {}\nkey {}\n", self.plugin, self.version, self.key_id);
        text.push_str(&format!("created {}\n", self.created));
        match self.expires {
            Some(expires) => text.push_str(&format!("expires {expires}\n")),
            None => text.push_str("expires never\n"),
        }
        for file in &self.files {
            text.push_str(&format!("file {} {} {}\n", file.sha256, file.size, file.path));
        }
        text
    }
}

/// What is wrong with a signed folder, one item per difference.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// The signature does not verify with the key it names: the statement was altered or
    /// made with another key.
    BadSignature {
        /// Why, in words.
        reason: String,
    },
    /// A signed file's bytes differ.
    Changed {
        /// The file.
        path: String,
        /// Its size and SHA-256 when signed.
        signed_size: u64,
        /// The signed SHA-256.
        signed_sha256: String,
        /// Its size now.
        size: u64,
        /// Its SHA-256 now.
        sha256: String,
    },
    /// A file that is in the folder but not in the signature.
    Added {
        /// The file.
        path: String,
    },
    /// A signed file that is gone.
    Removed {
        /// The file.
        path: String,
    },
    /// Something in the folder no signature can cover (a symbolic link, a device).
    Uncoverable {
        /// Its path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The signature is for another plugin id or version than `plugin.toml` says.
    OtherPlugin {
        /// What the signature names, `id version`.
        signed: String,
        /// What `plugin.toml` says.
        manifest: String,
    },
    /// The signature's time is up.
    Expired {
        /// When it expired, seconds since the epoch.
        expired: u64,
    },
}

impl Problem {
    /// The file the problem is about, below the folder; `None` when it is about the
    /// signature itself.
    pub fn path(&self) -> Option<&str> {
        match self {
            Problem::Changed { path, .. }
            | Problem::Added { path }
            | Problem::Removed { path }
            | Problem::Uncoverable { path, .. } => Some(path),
            Problem::BadSignature { .. } | Problem::OtherPlugin { .. } | Problem::Expired { .. } => None,
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::BadSignature { reason } => {
                write!(f, "{SIGNATURE_FILE}: the signature does not verify: {reason}")
            }
            Problem::Changed { path, signed_size, signed_sha256, size, sha256 } => write!(
                f,
                "{path}: changed since it was signed (signed: {signed_size} bytes, sha256 {signed_sha256}; \
                 now: {size} bytes, sha256 {sha256})"
            ),
            Problem::Added { path } => write!(f, "{path}: added after the folder was signed"),
            Problem::Removed { path } => write!(f, "{path}: signed, but no longer in the folder"),
            Problem::Uncoverable { path, reason } => write!(f, "{path}: cannot be signed: {reason}"),
            Problem::OtherPlugin { signed, manifest } => {
                write!(f, "{SIGNATURE_FILE}: signed for {signed}, but plugin.toml is {manifest}")
            }
            Problem::Expired { expired } => {
                write!(f, "{SIGNATURE_FILE}: expired at {}", httpdate::fmt_http_date(at(*expired)))
            }
        }
    }
}

/// The result of checking a signed folder: who signed what, and every problem found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    /// The plugin id the signature names.
    pub plugin: String,
    /// The version it names.
    pub version: String,
    /// The signer's key id.
    pub key_id: KeyId,
    /// The signer's public key, 64 hex digits.
    pub public_key: String,
    /// When it was signed, seconds since the epoch.
    pub created: u64,
    /// Until when it holds, `None` for no end.
    pub expires: Option<u64>,
    /// The files it covers.
    pub files: usize,
    /// Every problem; none means the folder is exactly what was signed.
    pub problems: Vec<Problem>,
}

impl Verification {
    /// Whether the folder is exactly what the key signed, and the signature still holds.
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Signs `folder` with `key`: writes its `plugin.sig` (replacing an old one) covering every
/// file in it, for the id and version of its `plugin.toml`, valid until `expires` if given.
/// Returns what was signed, as [`verify_folder`] would report it.
///
/// # Errors
/// `invalid_argument` when `plugin.toml` is missing or invalid, or the folder holds
/// something a signature cannot cover (a symbolic link, a name with control characters);
/// `failed_precondition` when a file cannot be read or `plugin.sig` cannot be written.
pub fn sign_folder(folder: &Path, key: &PrivateKey, expires: Option<SystemTime>) -> Result<Verification> {
    let manifest = read_manifest(folder)?;
    let (files, uncoverable) = digest_folder(folder, Vec::new())?;
    if let Some(first) = uncoverable.first() {
        return Err(
            Error::invalid(format!("{}: cannot be signed: {}", first.path, first.reason)).with_file(folder)
        );
    }
    let public = key.public();
    let mut file = SignatureFile {
        format: FORMAT.to_owned(),
        plugin: manifest.plugin.id.clone(),
        version: manifest.plugin.version.to_string(),
        key_id: public.id.clone(),
        public_key: public.to_hex(),
        created: seconds(SystemTime::now()),
        expires: expires.map(seconds),
        files,
        signature: String::new(),
    };
    file.signature = hex(&key.sign(file.statement().as_bytes()));
    let mut text = serde_json::to_string_pretty(&file).expect("a signature serialises");
    text.push('\n');
    let path = folder.join(SIGNATURE_FILE);
    std::fs::write(&path, text).map_err(|error| {
        Error::new(Code::FailedPrecondition, format!("cannot write the signature: {error}")).with_file(&path)
    })?;
    verify_folder(folder)
}

/// Checks `folder` against its `plugin.sig`: the signature against the key it names, every
/// file against the list, the plugin id and version against `plugin.toml`, the expiry
/// against now. Whether the key is one to trust is the caller's question.
///
/// # Errors
/// `not_found` when the folder has no `plugin.sig` (it is unsigned); `invalid_argument`
/// when `plugin.sig` is not a signature file, naming it; `failed_precondition` when a file
/// cannot be read.
pub fn verify_folder(folder: &Path) -> Result<Verification> {
    verify_pinned(folder, Vec::new)
}

/// [`verify_folder`], with the files in `pinned` (called only when the folder is signed)
/// judged by the digests given rather than read again: the host pins the bytes it has read
/// and will run, so a file swapped after that read cannot pass for them.
///
/// # Errors
/// As [`verify_folder`].
pub(crate) fn verify_pinned(folder: &Path, pinned: impl FnOnce() -> Vec<FileDigest>) -> Result<Verification> {
    let path = folder.join(SIGNATURE_FILE);
    let file = read_signature(&path)?;
    let mut problems = Vec::new();
    match check_signature(&file) {
        Ok(()) => {}
        Err(reason) => problems.push(Problem::BadSignature { reason }),
    }
    // A missing or broken plugin.toml shows up as removed or changed below.
    if let Ok(manifest) = read_manifest(folder) {
        let now = format!("{} {}", manifest.plugin.id, manifest.plugin.version);
        let signed = format!("{} {}", file.plugin, file.version);
        if now != signed {
            problems.push(Problem::OtherPlugin { signed, manifest: now });
        }
    }
    let (files, uncoverable) = digest_folder(folder, pinned())?;
    problems.extend(compare(&file.files, &files));
    problems.extend(
        uncoverable
            .into_iter()
            .map(|item| Problem::Uncoverable { path: item.path, reason: item.reason.to_owned() }),
    );
    if let Some(expires) = file.expires
        && seconds(SystemTime::now()) >= expires
    {
        problems.push(Problem::Expired { expired: expires });
    }
    Ok(Verification {
        plugin: file.plugin,
        version: file.version,
        key_id: file.key_id,
        public_key: file.public_key,
        created: file.created,
        expires: file.expires,
        files: file.files.len(),
        problems,
    })
}

/// Reads and parses `plugin.sig`.
fn read_signature(path: &Path) -> Result<SignatureFile> {
    let invalid = |message: String| Error::invalid(message).with_file(path);
    let bytes = match std::fs::metadata(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(
                Error::new(Code::NotFound, "the folder is not signed: it has no plugin.sig").with_file(path)
            );
        }
        Ok(meta) if meta.len() > MAX_SIGNATURE_BYTES => {
            return Err(invalid(format!(
                "{} bytes, more than a signature file's {MAX_SIGNATURE_BYTES}",
                meta.len()
            )));
        }
        _ => std::fs::read(path).map_err(|error| {
            Error::new(Code::FailedPrecondition, format!("cannot read the signature: {error}"))
                .with_file(path)
        })?,
    };
    let file: SignatureFile = serde_json::from_slice(&bytes)
        .map_err(|error| invalid(format!("not a plugbay signature file: {error}")))?;
    if file.format != FORMAT {
        return Err(invalid(format!("format {:?}: this host reads {FORMAT}", file.format)));
    }
    Ok(file)
}

/// Whether the statement verifies with the public key the file names, and that key has
/// the id it claims.
fn check_signature(file: &SignatureFile) -> std::result::Result<(), String> {
    let key = PublicKey::from_hex(&file.public_key, "").map_err(|error| error.to_string())?;
    if key.id != file.key_id {
        return Err(format!("key_id {} is not the id of its public_key ({})", file.key_id, key.id));
    }
    let signature = from_hex::<64>(&file.signature).ok_or("the signature is not 128 hex digits")?;
    let lines_ok = [&file.plugin, &file.version].iter().all(|text| !text.contains('\n'))
        && file.files.iter().all(|f| !f.path.contains('\n') && !f.sha256.contains(' '));
    if !lines_ok || !key.verifies(file.statement().as_bytes(), &signature) {
        return Err(format!("it is not key {}'s signature of what the file says", file.key_id));
    }
    Ok(())
}

/// The differences between the signed list and the folder's, by path.
fn compare(signed: &[FileDigest], now: &[FileDigest]) -> Vec<Problem> {
    let now: BTreeMap<&str, &FileDigest> = now.iter().map(|file| (file.path.as_str(), file)).collect();
    let mut problems = Vec::new();
    for file in signed {
        match now.get(file.path.as_str()) {
            None => problems.push(Problem::Removed { path: file.path.clone() }),
            Some(current) if current.sha256 != file.sha256 || current.size != file.size => {
                problems.push(Problem::Changed {
                    path: file.path.clone(),
                    signed_size: file.size,
                    signed_sha256: file.sha256.clone(),
                    size: current.size,
                    sha256: current.sha256.clone(),
                })
            }
            Some(_) => {}
        }
    }
    let signed: std::collections::BTreeSet<&str> = signed.iter().map(|file| file.path.as_str()).collect();
    problems.extend(
        now.keys()
            .filter(|path| !signed.contains(*path))
            .map(|path| Problem::Added { path: (*path).to_owned() }),
    );
    problems
}

fn read_manifest(folder: &Path) -> Result<Manifest> {
    let path = folder.join("plugin.toml");
    let bytes = std::fs::read(&path).map_err(|error| {
        Error::invalid(format!("a plugin folder needs its plugin.toml: {error}")).with_file(&path)
    })?;
    Manifest::parse(&bytes, &path, None)
}

fn seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

/// The time `seconds` after the epoch.
pub(crate) fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_secs(seconds)
}

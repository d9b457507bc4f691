//! `plugbay key new`, `plugbay sign` and `plugbay verify`: signing keys and signed plugin
//! folders (docs/trust.md).

use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use plugbay_core::Code;
use plugbay_core::trust::{self, PrivateKey, PublicKey, Verification};

use crate::cli::{KeyNewArgs, SignArgs, VerifyArgs};
use crate::commands::{Outcome, print_json};

/// Runs `plugbay key new`: writes the pair and prints where, with the key id.
///
/// # Errors
/// When the name is not a plain file name, a file exists, or they cannot be written.
pub fn key_new(args: &KeyNewArgs) -> anyhow::Result<Outcome> {
    let key = PrivateKey::generate(&args.name)?;
    std::fs::create_dir_all(&args.dir).with_context(|| format!("cannot create {}", args.dir.display()))?;
    let (private, public) = key.write_pair(&args.dir)?;
    println!("key {} (id {})", args.name, key.public().id);
    println!("private key: {} (keep it secret; it signs plugins)", private.display());
    println!("public key:  {} (give it to the hosts that trust this signer)", public.display());
    Ok(Outcome::Done)
}

/// Runs `plugbay sign`: writes the folder's `plugin.sig` and says what it covers.
///
/// # Errors
/// When the key cannot be read or the folder cannot be signed (each error says why).
pub fn sign(args: &SignArgs) -> anyhow::Result<Outcome> {
    let key = PrivateKey::read(&args.key)?;
    let expires =
        args.expires_in_days.map(|days| SystemTime::now() + Duration::from_secs(u64::from(days) * 86_400));
    let signed = trust::sign_folder(&args.dir, &key, expires)?;
    println!(
        "signed {} {} with key {} (id {}): {} files, {}",
        signed.plugin,
        signed.version,
        key.name,
        signed.key_id,
        signed.files,
        args.dir.join(trust::SIGNATURE_FILE).display()
    );
    Ok(Outcome::Done)
}

/// Runs `plugbay verify`: [`Outcome::Done`] when the folder is exactly what was signed
/// (and by `--key`, when given), else [`Outcome::Failed`] with every problem listed.
///
/// # Errors
/// When a file cannot be read (an unsigned folder or a broken `plugin.sig` is a failed
/// verification, not an error).
pub fn verify(args: &VerifyArgs) -> anyhow::Result<Outcome> {
    let expected = args.key.as_deref().map(PublicKey::read).transpose()?;
    let verification = match trust::verify_folder(&args.dir) {
        Ok(verification) => verification,
        Err(error) if matches!(error.code(), Code::NotFound | Code::InvalidArgument) => {
            if args.json {
                print_json(&serde_json::json!({"valid": false, "error": error.to_string()}))?;
            } else {
                println!("not verified: {error}");
            }
            return Ok(Outcome::Failed);
        }
        Err(error) => return Err(error.into()),
    };
    let wrong_key = expected.as_ref().filter(|key| key.to_hex() != verification.public_key);
    if args.json {
        print_json(&report(&verification, expected.as_ref(), wrong_key.is_some()))?;
    } else {
        print_human(&verification, expected.as_ref(), wrong_key);
    }
    let valid = verification.is_valid() && wrong_key.is_none();
    Ok(if valid { Outcome::Done } else { Outcome::Failed })
}

/// The JSON report.
fn report(verification: &Verification, expected: Option<&PublicKey>, wrong_key: bool) -> serde_json::Value {
    let mut problems: Vec<serde_json::Value> = verification
        .problems
        .iter()
        .map(|problem| {
            let mut value = serde_json::to_value(problem).expect("a problem serialises");
            value["message"] = problem.to_string().into();
            value
        })
        .collect();
    if let (Some(expected), true) = (expected, wrong_key) {
        problems.push(serde_json::json!({
            "problem": "other_key",
            "expected_key_id": expected.id,
            "message": wrong_key_message(verification, expected),
        }));
    }
    serde_json::json!({
        "valid": problems.is_empty(),
        "plugin": verification.plugin,
        "version": verification.version,
        "key_id": verification.key_id,
        "key_name": expected.filter(|_| !wrong_key).map(|key| key.name.clone()),
        "public_key": verification.public_key,
        "created": verification.created,
        "expires": verification.expires,
        "files": verification.files,
        "problems": problems,
    })
}

fn print_human(verification: &Verification, expected: Option<&PublicKey>, wrong_key: Option<&PublicKey>) {
    let signer = match expected {
        Some(key) if wrong_key.is_none() => format!("key {} (id {})", key.name, verification.key_id),
        _ => format!("key id {}", verification.key_id),
    };
    let when = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(verification.created));
    let what = format!(
        "{} {}, {} files, signed by {signer} on {when}",
        verification.plugin, verification.version, verification.files
    );
    if verification.is_valid() && wrong_key.is_none() {
        println!("valid: {what}");
        return;
    }
    println!("NOT valid: {what}");
    for problem in &verification.problems {
        println!("  {problem}");
    }
    if let Some(expected) = wrong_key {
        println!("  {}", wrong_key_message(verification, expected));
    }
}

fn wrong_key_message(verification: &Verification, expected: &PublicKey) -> String {
    format!(
        "signed by key id {}, not by the key {} given with --key (id {})",
        verification.key_id, expected.name, expected.id
    )
}

//! `plugbay token new`: an API token's secret, printed once, and its `[[api.tokens]]` entry.

use anyhow::Context as _;

use crate::cli::TokenNewArgs;
use crate::commands::Outcome;
use crate::daemon::access::{Scope, secret_sha256};

/// Runs `plugbay token new`: checks the scopes, draws 32 random bytes for the secret, and
/// prints the secret and the config entry (which holds only its SHA-256).
///
/// # Errors
/// When a scope is not one the daemon knows, or the system has no randomness to give.
pub fn new(args: &TokenNewArgs) -> anyhow::Result<Outcome> {
    if args.name.is_empty() || args.name.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
        anyhow::bail!(
            "the token name {:?} must be non-empty, without quotes, backslashes or control characters",
            args.name
        );
    }
    let scopes = args.scopes.iter().map(|scope| Scope::parse(scope)).collect::<Result<Vec<_>, _>>();
    let scopes = scopes.map_err(|error| anyhow::anyhow!("--scope: {error}"))?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|error| anyhow::anyhow!("{error}"))
        .context("cannot draw a secret")?;
    let secret: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    let secret = format!("pbt_{secret}");
    let quoted: Vec<String> = scopes.iter().map(|scope| format!("\"{scope}\"")).collect();
    println!("secret (shown once; give it to the client as PLUGBAY_TOKEN or `Authorization: Bearer ...`):");
    println!("{secret}");
    println!();
    println!("add to plugbay.toml:");
    println!("[[api.tokens]]");
    println!("name = \"{}\"", args.name);
    println!("sha256 = \"{}\"", secret_sha256(&secret));
    println!("scopes = [{}]", quoted.join(", "));
    Ok(Outcome::Done)
}

//! Who may use the daemon's APIs: API tokens (`[[api.tokens]]`, and the single `api.token`
//! / `PLUGBAY_TOKEN`), each with scopes, checked the same way by both APIs.
//!
//! A token is stored as the SHA-256 of its secret, never the secret. When at least one
//! token is configured, every request but `/healthz`, `/readyz` and gRPC health needs one:
//! a missing or unknown token is refused as unauthenticated (HTTP 401), a known one outside
//! its scopes as `permission_denied` (HTTP 403). With none configured (a loopback-only
//! daemon) every request is admitted, as before tokens existed.

use std::fmt;

use sha2::{Digest, Sha256};

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need<'a> {
    /// Nothing: health checks.
    Open,
    /// Reading the daemon's state: plugins, events, crashes, metrics, the API document.
    Read,
    /// Changing it: load, unload, reload, stop, start, publish.
    Manage,
    /// Calling `method` of `target` (`text.transform@1`, `plugin:kv-store`).
    Call {
        /// The capability or `plugin:<id>`.
        target: &'a str,
        /// The method.
        method: &'a str,
    },
}

impl fmt::Display for Need<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Need::Open => f.write_str("nothing"),
            Need::Read => f.write_str("read"),
            Need::Manage => f.write_str("manage"),
            Need::Call { target, method } => write!(f, "call:{target}/{method}"),
        }
    }
}

/// One thing a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `read`.
    Read,
    /// `manage`.
    Manage,
    /// `call:<target>/<method>`; either may be `*` (any).
    Call {
        /// A capability, `plugin:<id>`, or `*`.
        target: String,
        /// A method, or `*`.
        method: String,
    },
}

impl Scope {
    /// Every scope: what the single `api.token` grants.
    pub fn all() -> Vec<Scope> {
        vec![Scope::Read, Scope::Manage, Scope::Call { target: "*".into(), method: "*".into() }]
    }

    /// Parses `read`, `manage` or `call:<target>/<method>`.
    ///
    /// # Errors
    /// Saying what is allowed.
    pub fn parse(text: &str) -> Result<Scope, String> {
        let allowed = "allowed: \"read\", \"manage\", \"call:<capability or plugin:id or *>/<method or *>\"";
        match text {
            "read" => Ok(Scope::Read),
            "manage" => Ok(Scope::Manage),
            _ => {
                let call = text.strip_prefix("call:").and_then(|rest| rest.rsplit_once('/'));
                match call {
                    Some((target, method)) if !target.is_empty() && !method.is_empty() => {
                        Ok(Scope::Call { target: target.to_owned(), method: method.to_owned() })
                    }
                    _ => Err(format!("{text:?} is not a scope; {allowed}")),
                }
            }
        }
    }

    /// Whether this scope grants `need`.
    pub fn grants(&self, need: &Need<'_>) -> bool {
        let matches = |pattern: &str, value: &str| pattern == "*" || pattern == value;
        match (self, need) {
            (_, Need::Open) => true,
            (Scope::Read, Need::Read) | (Scope::Manage, Need::Manage) => true,
            (Scope::Call { target, method }, Need::Call { target: asked, method: called }) => {
                matches(target, asked) && matches(method, called)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Read => f.write_str("read"),
            Scope::Manage => f.write_str("manage"),
            Scope::Call { target, method } => write!(f, "call:{target}/{method}"),
        }
    }
}

/// One configured token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// Its name, for logs and refusals.
    pub name: String,
    /// SHA-256 of the secret.
    pub sha256: [u8; 32],
    /// What it may do.
    pub scopes: Vec<Scope>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Whether its scopes hold `need`.
    ///
    /// # Errors
    /// [`Refusal::OutOfScope`] naming the token and the need.
    pub fn allows(&self, need: &Need<'_>) -> Result<(), Refusal> {
        if self.scopes.iter().any(|scope| scope.grants(need)) {
            Ok(())
        } else {
            Err(Refusal::OutOfScope { token: self.name.clone(), needed: need.to_string() })
        }
    }

    /// A token whose secret is `secret` (the single `api.token`).
    pub fn from_secret(name: &str, secret: &str, scopes: Vec<Scope>) -> Token {
        Token { name: name.to_owned(), sha256: Sha256::digest(secret.as_bytes()).into(), scopes }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer` token, or not one the daemon knows (HTTP 401).
    Unauthenticated,
    /// A known token whose scopes do not hold what was asked (HTTP 403).
    OutOfScope {
        /// The token's name.
        token: String,
        /// What the request needed.
        needed: String,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Unauthenticated => f.write_str(
                "this daemon needs an API token: send `Authorization: Bearer <token>` (the CLI sends PLUGBAY_TOKEN)",
            ),
            Refusal::OutOfScope { token, needed } => {
                write!(f, "token {token} does not have the scope this needs ({needed})")
            }
        }
    }
}

/// The daemon's tokens; empty admits everything.
#[derive(Debug, Clone, Default)]
pub struct Access {
    tokens: Vec<Token>,
}

impl Access {
    /// Access by `tokens`.
    pub fn new(tokens: Vec<Token>) -> Access {
        Access { tokens }
    }

    /// Whether any token is configured (then every request but health needs one).
    pub fn is_guarded(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Checks `authorization` (the header's value) for `need`; the token's name when one
    /// was given and matched.
    ///
    /// # Errors
    /// [`Refusal::Unauthenticated`] for a missing or unknown token,
    /// [`Refusal::OutOfScope`] for a known one that lacks the scope.
    pub fn check(&self, authorization: Option<&str>, need: Need<'_>) -> Result<Option<&str>, Refusal> {
        if need == Need::Open {
            return Ok(None);
        }
        match self.identify(authorization)? {
            None => Ok(None),
            Some(token) => token.allows(&need).map(|()| Some(token.name.as_str())),
        }
    }

    /// The token `authorization` carries, for requests whose needs are learnt later (each
    /// message of a call stream); `None` when no token is configured.
    ///
    /// # Errors
    /// [`Refusal::Unauthenticated`] for a missing or unknown token.
    pub fn identify(&self, authorization: Option<&str>) -> Result<Option<&Token>, Refusal> {
        if !self.is_guarded() {
            return Ok(None);
        }
        let secret =
            authorization.and_then(|value| value.strip_prefix("Bearer ")).ok_or(Refusal::Unauthenticated)?;
        self.find(secret).map(Some).ok_or(Refusal::Unauthenticated)
    }

    /// The token whose hash is the secret's; every token is compared, each in constant
    /// time, so the time taken says nothing of which (or whether one) matched.
    fn find(&self, secret: &str) -> Option<&Token> {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut found = None;
        for token in &self.tokens {
            let diff = token.sha256.iter().zip(&digest).fold(0u8, |diff, (a, b)| diff | (a ^ b));
            if diff == 0 && found.is_none() {
                found = Some(token);
            }
        }
        found
    }
}

/// The SHA-256 of `secret` in lowercase hex: what `[[api.tokens]] sha256` holds.
pub fn secret_sha256(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> Access {
        Access::new(vec![
            Token::from_secret("reader", "secret-reader-0123", vec![Scope::Read]),
            Token::from_secret(
                "caller",
                "secret-caller-0123",
                vec![
                    Scope::parse("call:text.transform@1/*").unwrap(),
                    Scope::parse("call:kv@1/get").unwrap(),
                ],
            ),
        ])
    }

    #[test]
    fn scopes_parse_and_print_back() {
        for text in ["read", "manage", "call:text.transform@1/*", "call:plugin:kv-store/get", "call:*/*"] {
            assert_eq!(Scope::parse(text).unwrap().to_string(), text);
        }
        for bad in ["", "write", "call:", "call:kv@1", "call:/get", "call:kv@1/"] {
            let error = Scope::parse(bad).unwrap_err();
            assert!(error.contains("is not a scope; allowed:"), "{error}");
        }
    }

    #[test]
    fn each_token_gets_what_its_scopes_hold_and_nothing_else() {
        let access = access();
        let call = |target, method| Need::Call { target, method };
        let reader = Some("Bearer secret-reader-0123");
        let caller = Some("Bearer secret-caller-0123");
        assert_eq!(access.check(reader, Need::Read), Ok(Some("reader")));
        assert!(matches!(access.check(reader, Need::Manage), Err(Refusal::OutOfScope { .. })));
        assert!(matches!(access.check(reader, call("kv@1", "get")), Err(Refusal::OutOfScope { .. })));
        assert_eq!(access.check(caller, call("text.transform@1", "upper")), Ok(Some("caller")));
        assert_eq!(access.check(caller, call("kv@1", "get")), Ok(Some("caller")));
        let refused = access.check(caller, call("kv@1", "put")).unwrap_err();
        assert_eq!(refused.to_string(), "token caller does not have the scope this needs (call:kv@1/put)");
        assert_eq!(access.check(None, Need::Read), Err(Refusal::Unauthenticated));
        assert_eq!(access.check(Some("Bearer nope"), Need::Read), Err(Refusal::Unauthenticated));
        assert_eq!(access.check(Some("secret-reader-0123"), Need::Read), Err(Refusal::Unauthenticated));
        assert_eq!(access.check(None, Need::Open), Ok(None));
        assert_eq!(Access::default().check(None, Need::Manage), Ok(None), "no tokens: open");
    }
}

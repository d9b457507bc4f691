//! The bearer token check both APIs apply to mutating requests.

/// Whether an `Authorization` value is `Bearer <token>`, compared in constant time.
pub fn bearer_matches(authorization: Option<&str>, token: &str) -> bool {
    let Some(given) = authorization.and_then(|value| value.strip_prefix("Bearer ")) else { return false };
    let (given, token) = (given.as_bytes(), token.as_bytes());
    given.len() == token.len() && given.iter().zip(token).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_matches() {
        assert!(bearer_matches(Some("Bearer 0123456789abcdef"), "0123456789abcdef"));
        assert!(!bearer_matches(Some("Bearer 0123456789abcdeX"), "0123456789abcdef"));
        assert!(!bearer_matches(Some("0123456789abcdef"), "0123456789abcdef"));
        assert!(!bearer_matches(None, "0123456789abcdef"));
    }
}

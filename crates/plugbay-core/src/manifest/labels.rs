//! The `[labels]` table: free-form key -> value metadata.

use std::collections::BTreeMap;

use crate::error::Result;

use super::context::{At, Context, Problem, Seg, invalid};
use super::text::{lower_or_digit, matches, quote};

/// The longest label key, in bytes.
const MAX_KEY_CHARS: usize = 63;
/// The longest label value, in characters.
const MAX_VALUE_CHARS: usize = 256;

impl Context<'_> {
    /// Validates `[labels]`: every key and value well-formed.
    pub(super) fn labels(&self, labels: &BTreeMap<String, String>) -> Result<()> {
        for (key, value) in labels {
            let field = [Seg::Key("labels"), Seg::Key(key)];
            self.check(&field, At::Key, check_label_key(key))?;
            self.check(&field, At::Value, check_label_value(value))?;
        }
        Ok(())
    }
}

fn check_label_key(key: &str) -> Result<(), Problem> {
    let ok = key.len() <= MAX_KEY_CHARS
        && matches(key, lower_or_digit, |c| lower_or_digit(c) || matches!(c, '.' | '_' | '/' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "label key {} is not allowed; a label key is 1 to {MAX_KEY_CHARS} characters from a-z, \
             0-9, '.', '_', '/' and '-', starting with a letter or digit (e.g. \"region\")",
            quote(key)
        )))
    }
}

fn check_label_value(value: &str) -> Result<(), Problem> {
    let chars = value.chars().count();
    if chars > MAX_VALUE_CHARS {
        return Err(invalid(format!(
            "the label value is {chars} characters; the limit is {MAX_VALUE_CHARS}"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(format!(
            "label value {} contains a control character; label values are printable text",
            quote(value)
        )));
    }
    Ok(())
}

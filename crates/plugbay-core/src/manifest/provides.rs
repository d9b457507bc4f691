//! The `[provides]` and `[subscribes]` tables: the capabilities and methods a plugin serves,
//! and the bus topics it receives.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::Result;

use super::context::{At, Context, Problem, Seg, invalid};
use super::text::{MAX_NAME_CHARS, lower_or_digit, matches, quote};

/// The `[subscribes]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Subscribes {
    /// Topic patterns (`events.log`, `events.*`): characters from `a-z`, `0-9`, `.`, `_`,
    /// `*` and `-`, starting with a letter or digit, at most 128. Default: none.
    pub topics: Vec<String>,
}

/// `[subscribes]` as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub(super) struct RawSubscribes {
    topics: Vec<String>,
}

/// `[provides]`: capability -> its methods.
pub(super) type Provides = BTreeMap<String, Vec<String>>;

const METHOD_RULE: &str = "a capability maps to a non-empty array of method names \
                           (e.g. [\"parse\", \"parse_batch\"])";

/// Whether some capability in `provides` lists `method`.
pub(super) fn is_provided(provides: &Provides, method: &str) -> bool {
    provides.values().any(|methods| methods.iter().any(|provided| provided == method))
}

impl Context<'_> {
    /// Validates `[provides]`: well-formed capabilities, each with a non-empty list of
    /// well-formed methods, none listed twice.
    pub(super) fn provides(&self, provides: &Provides) -> Result<()> {
        use Seg::{Index, Key};

        for (capability, methods) in provides {
            let field = [Key("provides"), Key(capability)];
            self.check(&field, At::Key, check_capability(capability))?;
            if methods.is_empty() {
                return Err(self.error(
                    &field,
                    At::Value,
                    invalid(format!("capability {} lists no methods; {METHOD_RULE}", quote(capability))),
                ));
            }
            let mut seen = BTreeSet::new();
            for (index, method) in methods.iter().enumerate() {
                let field = [Key("provides"), Key(capability), Index(index)];
                self.check(&field, At::Value, check_method(method))?;
                if !seen.insert(method.as_str()) {
                    return Err(self.error(
                        &field,
                        At::Value,
                        invalid(format!(
                            "method {} is listed twice for capability {}; list each method once",
                            quote(method),
                            quote(capability)
                        )),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Validates `[subscribes]`: every topic pattern well-formed.
    pub(super) fn subscribes(&self, raw: RawSubscribes) -> Result<Subscribes> {
        use Seg::{Index, Key};

        for (index, topic) in raw.topics.iter().enumerate() {
            self.check(&[Key("subscribes"), Key("topics"), Index(index)], At::Value, check_topic(topic))?;
        }
        Ok(Subscribes { topics: raw.topics })
    }
}

pub(super) fn check_capability(capability: &str) -> Result<(), Problem> {
    let ok = capability.len() <= MAX_NAME_CHARS
        && capability.split_once('@').is_some_and(|(name, major)| {
            matches(name, lower_or_digit, |c| lower_or_digit(c) || matches!(c, '.' | '_' | '-'))
                && matches(major, |c| c.is_ascii_digit(), |c| c.is_ascii_digit())
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "capability {} is not allowed; a capability is \"name@major\": a name from a-z, 0-9, \
             '.', '_' and '-' starting with a letter or digit, '@', and a major version number, \
             at most {MAX_NAME_CHARS} characters (e.g. \"log.parse@1\")",
            quote(capability)
        )))
    }
}

pub(super) fn check_method(method: &str) -> Result<(), Problem> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if method.len() <= MAX_NAME_CHARS && matches(method, word, |c| word(c) || matches!(c, '.' | '-')) {
        Ok(())
    } else {
        Err(invalid(format!(
            "method {} is not allowed; a method name is 1 to {MAX_NAME_CHARS} characters from \
             A-Z, a-z, 0-9, '_', '.' and '-', starting with a letter, digit or '_' (e.g. \"parse_batch\")",
            quote(method)
        )))
    }
}

pub(super) fn check_topic(topic: &str) -> Result<(), Problem> {
    let ok = topic.len() <= MAX_NAME_CHARS
        && matches(topic, lower_or_digit, |c| lower_or_digit(c) || matches!(c, '.' | '_' | '*' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "topic {} is not allowed; a topic is 1 to {MAX_NAME_CHARS} characters from a-z, 0-9, \
             '.', '_', '*' and '-', starting with a letter or digit (e.g. \"events.log\")",
            quote(topic)
        )))
    }
}

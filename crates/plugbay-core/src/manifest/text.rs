//! Rules on text values that several sections share: character classes, the name length,
//! paths relative to the plugin folder, and how a value is quoted in a message.

use crate::error::Code;

use super::context::{Problem, invalid};

/// The longest capability, method, topic or environment variable name, in bytes.
pub(super) const MAX_NAME_CHARS: usize = 128;

/// Whether `value` is a non-empty run of `rest` characters starting with a `first` one.
pub(super) fn matches(value: &str, first: impl Fn(char) -> bool, rest: impl Fn(char) -> bool) -> bool {
    let mut chars = value.chars();
    chars.next().is_some_and(first) && chars.all(rest)
}

/// `a-z` or `0-9`.
pub(super) fn lower_or_digit(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `value` in quotes, shortened to 64 characters, with control characters escaped.
pub(super) fn quote(value: &str) -> String {
    const SHOWN: usize = 64;
    if value.chars().count() > SHOWN {
        let shown: String = value.chars().take(SHOWN).collect();
        format!("{shown:?}... ({} characters)", value.chars().count())
    } else {
        format!("{value:?}")
    }
}

/// A path relative to the plugin folder that stays inside it. Escaping (absolute, drive,
/// `..`) is [`Code::PermissionDenied`]; other problems are [`Code::InvalidArgument`].
pub(super) fn check_relative_path(path: &str, max_chars: usize) -> Result<(), Problem> {
    const RULE: &str = "use a path relative to the plugin folder, with '/' between parts and no '..' \
                        (e.g. \"bin/plugin\")";
    if path.is_empty() {
        return Err(invalid(format!("the path is empty; {RULE}")));
    }
    if path.contains('\0') {
        return Err(invalid(format!("path {} contains a NUL character; {RULE}", quote(path))));
    }
    let bytes = path.as_bytes();
    let drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if path.starts_with('/') || path.starts_with('\\') || drive {
        return Err((
            Code::PermissionDenied,
            format!("path {} is absolute and escapes the plugin folder; {RULE}", quote(path)),
        ));
    }
    if path.split(['/', '\\']).any(|part| part == "..") {
        return Err((
            Code::PermissionDenied,
            format!("path {} uses '..' and may escape the plugin folder; {RULE}", quote(path)),
        ));
    }
    if path.contains('\\') {
        return Err(invalid(format!("path {} contains a backslash; {RULE}", quote(path))));
    }
    let chars = path.chars().count();
    if chars > max_chars {
        return Err(invalid(format!("the path is {chars} characters; the limit is {max_chars}")));
    }
    if path.chars().any(char::is_control) {
        return Err(invalid(format!("path {} contains a control character; {RULE}", quote(path))));
    }
    Ok(())
}

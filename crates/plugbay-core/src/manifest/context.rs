//! Errors located in the document: a field's path, its span in toml's spanned tree
//! ([`DeTable`]), and the [`Context`] that turns a [`Problem`] with one value into an
//! [`Error`] naming the file, the line and column, and the dotted field.

use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};

use crate::error::{Code, Error, Result};

/// One step of a field path: a table key or an array index.
#[derive(Debug, Clone, Copy)]
pub(super) enum Seg<'s> {
    /// A key of a table.
    Key(&'s str),
    /// An index into an array.
    Index(usize),
}

/// Which span of a located field an error points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum At {
    /// The key (for a bad key, e.g. a capability name).
    Key,
    /// The value.
    Value,
}

/// A problem with one value: its code (InvalidArgument unless it escapes the folder) and a
/// message that says what is allowed.
pub(super) type Problem = (Code, String);

/// An [`Code::InvalidArgument`] problem.
pub(super) fn invalid(message: impl Into<String>) -> Problem {
    (Code::InvalidArgument, message.into())
}

/// The manifest being validated: where it came from, its text and its spanned tree.
pub(super) struct Context<'a> {
    /// The manifest's path, named in every error.
    pub(super) path: &'a Path,
    /// The manifest's text, for line and column numbers.
    pub(super) text: &'a str,
    /// The spanned document, for the span of a field.
    pub(super) doc: &'a DeTable<'a>,
    /// The plugin id named in errors: `plugin.id` when it is a string, else the folder name.
    pub(super) plugin: Option<String>,
}

impl Context<'_> {
    /// An error about `field`, at the span of its key or value, or failing that at the nearest
    /// enclosing table found in the document.
    pub(super) fn error(&self, field: &[Seg<'_>], at: At, (code, message): Problem) -> Error {
        let span = (0..=field.len()).rev().find_map(|len| {
            let (key, value) = locate(self.doc, &field[..len])?;
            Some(if at == At::Key && len == field.len() { key } else { value })
        });
        self.located(field, span, code, message)
    }

    /// `result`, or its problem as an [error](Context::error) about `field`.
    pub(super) fn check<T>(&self, field: &[Seg<'_>], at: At, result: Result<T, Problem>) -> Result<T> {
        result.map_err(|problem| self.error(field, at, problem))
    }

    fn located(&self, field: &[Seg<'_>], span: Option<Range<usize>>, code: Code, message: String) -> Error {
        let mut error = Error::new(code, message).with_file(self.path);
        if !field.is_empty() {
            error = error.with_field(field_name(field));
        }
        if let Some(span) = span {
            let (line, column) = line_col(self.text, span.start);
            error = error.with_position(line, column);
        }
        match &self.plugin {
            Some(plugin) => error.with_plugin(plugin.as_str()),
            None => error,
        }
    }

    /// Turns a serde error (unknown key, wrong type) into ours, with the full field path.
    pub(super) fn serde_error(&self, error: &serde_path_to_error::Error<toml::de::Error>) -> Error {
        let mut field: Vec<Seg<'_>> = error
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.as_str())),
                serde_path_to_error::Segment::Enum { variant } => Some(Seg::Key(variant.as_str())),
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let inner = error.inner();
        let span = inner.span();
        // For an unknown key the path ends at its table; add the key, found by its span (or,
        // failing that, by the name in serde's message).
        let mut unknown_key = None;
        if let Some(rest) = inner.message().strip_prefix("unknown field `") {
            let from_span = span.as_ref().and_then(|span| {
                let table = match locate_value_of(self.doc, &field)? {
                    Holder::Root(table) | Holder::Value(DeValue::Table(table)) => table,
                    Holder::Value(_) => return None,
                };
                table.iter().find(|(key, _)| key.span() == *span).map(|(key, _)| key.get_ref().to_string())
            });
            unknown_key = from_span.or_else(|| rest.split_once('`').map(|(name, _)| name.to_owned()));
        }
        if let Some(key) = &unknown_key
            && !matches!(field.last(), Some(Seg::Key(last)) if last == key)
        {
            field.push(Seg::Key(key.as_str()));
        }
        let span = span.or_else(|| locate(self.doc, &field).map(|(_, value)| value));
        self.located(&field, span, Code::InvalidArgument, humanize(inner.message()))
    }
}

/// serde's wording for the raw types, in TOML's words.
fn humanize(message: &str) -> String {
    message
        .replace("expected i64", "expected an integer")
        .replace("expected a sequence", "expected an array")
        .replace("expected a map", "expected a table")
}

/// The dotted field name: `plugin.id`, `provides."log.parse@1"[0]`.
pub(super) fn field_name(field: &[Seg<'_>]) -> String {
    let mut out = String::new();
    for seg in field {
        match seg {
            Seg::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let bare =
                    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if bare {
                    out.push_str(key);
                } else {
                    out.push_str(&format!("{key:?}"));
                }
            }
            Seg::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// What a path leads to: the document itself, or a value in it.
enum Holder<'d, 'i> {
    Root(&'d DeTable<'i>),
    Value(&'d DeValue<'i>),
}

/// The spans of the key and the value at `field`.
fn locate(doc: &DeTable<'_>, field: &[Seg<'_>]) -> Option<(Range<usize>, Range<usize>)> {
    let mut spans = None;
    let mut holder = Holder::Root(doc);
    for seg in field {
        let (key_span, value) = step(holder, *seg)?;
        spans = Some((key_span, value.span()));
        holder = Holder::Value(value.get_ref());
    }
    spans
}

/// The value at `field`, if the document has one there.
pub(super) fn locate_value<'d, 'i>(doc: &'d DeTable<'i>, field: &[Seg<'_>]) -> Option<&'d DeValue<'i>> {
    match locate_value_of(doc, field)? {
        Holder::Value(value) => Some(value),
        Holder::Root(_) => None,
    }
}

fn locate_value_of<'d, 'i>(doc: &'d DeTable<'i>, field: &[Seg<'_>]) -> Option<Holder<'d, 'i>> {
    let mut holder = Holder::Root(doc);
    for seg in field {
        holder = Holder::Value(step(holder, *seg)?.1.get_ref());
    }
    Some(holder)
}

fn step<'d, 'i>(
    holder: Holder<'d, 'i>,
    seg: Seg<'_>,
) -> Option<(Range<usize>, &'d toml::Spanned<DeValue<'i>>)> {
    let table = match (holder, seg) {
        (Holder::Root(table), Seg::Key(_)) | (Holder::Value(DeValue::Table(table)), Seg::Key(_)) => table,
        (Holder::Value(DeValue::Array(array)), Seg::Index(index)) => {
            let value = array.get(index)?;
            return Some((value.span(), value));
        }
        _ => return None,
    };
    let Seg::Key(name) = seg else { return None };
    table.iter().find(|(key, _)| key.get_ref() == name).map(|(key, value)| (key.span(), value))
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    (line, before[line_start..].chars().count() + 1)
}

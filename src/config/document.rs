//! The config text as a TOML document with spans: it deserializes each
//! source and sink table on its own, so that an error inside one keeps the
//! position of its key, and it finds the line of any key for the errors and
//! warnings of validation.
//!
//! serde's internally tagged enums (`#[serde(tag = "type")]`) buffer a
//! table before choosing the variant, and the buffer has no positions: every
//! error inside `[sources.app]` would point at its header. Reading `type`
//! first and deserializing the variant's struct straight from the spanned
//! table avoids that.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::ConfigError;

/// One config file: its name for messages, its text and its parsed tables.
#[derive(Debug)]
pub(super) struct Document<'text> {
    path: &'text Path,
    text: &'text str,
    /// The whole document, kept to find the position of keys.
    root: DeTable<'text>,
}

impl<'text> Document<'text> {
    /// Parses `text`; a syntax error is a [`ConfigError::Parse`] naming the
    /// line and column.
    pub(super) fn parse(text: &'text str, path: &'text Path) -> Result<Self, ConfigError> {
        let root = DeTable::parse(text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: describe(text, error.span(), error.message()),
        })?;
        Ok(Document {
            path,
            text,
            root: root.into_inner(),
        })
    }

    /// Deserializes the whole document.
    pub(super) fn deserialize<T: Deserialize<'text>>(&self) -> Result<T, ConfigError> {
        let whole = 0..self.text.len();
        T::deserialize(toml::de::Deserializer::from(Spanned::new(
            whole,
            self.root.clone(),
        )))
        .map_err(|error| self.toml_error_noted(&error, ""))
    }

    /// Deserializes each `[<table>.<id>]` with `build(type, fields)`,
    /// where `type` is the value of its `type` key (one of `kinds`),
    /// removed from `fields`. `common_keys` are the keys `build` takes out
    /// before the kind's own struct sees the rest; an unknown key's message
    /// names them beside the struct's own.
    pub(super) fn components<T>(
        &self,
        table: &str,
        kinds: &[&str],
        common_keys: &[&str],
        build: impl Fn(&str, ComponentFields<'text>) -> Result<T, toml::de::Error>,
    ) -> Result<BTreeMap<String, T>, ConfigError> {
        let mut components = BTreeMap::new();
        let Some((key, value)) = self.root.get_key_value(table) else {
            return Ok(components);
        };
        let DeValue::Table(entries) = value.get_ref() else {
            return Err(self.error_at(key.span(), &format!("`{table}` must be a table")));
        };
        for (id, entry) in entries {
            let name = format!("{table}.{}", id.get_ref());
            let DeValue::Table(fields) = entry.get_ref() else {
                return Err(self.error_at(id.span(), &format!("`{name}` must be a table")));
            };
            let mut fields = fields.clone();
            let Some(kind) = fields.remove("type") else {
                return Err(self.error_at(id.span(), &format!("`{name}` has no `type` key")));
            };
            let kind_name = match kind.get_ref() {
                DeValue::String(kind_name) if kinds.contains(&kind_name.as_ref()) => kind_name,
                _ => {
                    let message =
                        format!("`{name}.type` must be one of \"{}\"", kinds.join("\", \""));
                    return Err(self.error_at(kind.span(), &message));
                }
            };
            let fields = ComponentFields {
                span: entry.span(),
                fields,
            };
            let component = build(kind_name, fields).map_err(|error| {
                let unknown_key = error.message().starts_with("unknown field");
                let note = match common_keys {
                    [] => String::new(),
                    _ if !unknown_key => String::new(),
                    keys => format!("; every [{table}.<id>] also takes `{}`", keys.join("`, `")),
                };
                self.toml_error_noted(&error, &note)
            })?;
            components.insert(id.get_ref().to_string(), component);
        }
        Ok(components)
    }

    /// A [`ConfigError::Parse`] for a deserialization error, naming the key
    /// whose value holds the error's position, with `note` after its
    /// message.
    fn toml_error_noted(&self, error: &toml::de::Error, note: &str) -> ConfigError {
        let key = error
            .span()
            .and_then(|span| key_path_at(&self.root, &span))
            .filter(|key| !error.message().contains(&format!("`{key}`")));
        let message = match key {
            Some(key) => format!("`{key}`: {}{note}", error.message().trim_end()),
            None => format!("{}{note}", error.message().trim_end()),
        };
        ConfigError::Parse {
            path: self.path.to_path_buf(),
            message: describe(self.text, error.span(), &message),
        }
    }

    fn error_at(&self, span: Range<usize>, message: &str) -> ConfigError {
        ConfigError::Parse {
            path: self.path.to_path_buf(),
            message: describe(self.text, Some(span), message),
        }
    }

    /// A [`ConfigError::Invalid`] about the key at `key_path`, with its line.
    pub(super) fn invalid(&self, key_path: &[&str], reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key_path.join("."),
            line: self.key_line(key_path),
            reason: reason.into(),
        }
    }

    /// The 1-based line of the key at `key_path` (or of the nearest table
    /// on the path that is written in the file), and the text of that line.
    pub(super) fn key_line(&self, key_path: &[&str]) -> Option<KeyLine> {
        let span = key_span(&self.root, key_path)?;
        Some(KeyLine::at(self.text, span.start))
    }

    /// The line of element `index` of the array at `key_path`, or of its key.
    pub(super) fn element_line(&self, key_path: &[&str], index: usize) -> Option<KeyLine> {
        let element = value_at(&self.root, key_path).and_then(|value| match value.get_ref() {
            DeValue::Array(array) => array.get(index).map(Spanned::span),
            _ => None,
        });
        match element {
            Some(span) => Some(KeyLine::at(self.text, span.start)),
            None => self.key_line(key_path),
        }
    }

    pub(super) fn path(&self) -> &Path {
        self.path
    }
}

/// The keys of one `[<table>.<id>]` table but `type`, with their spans:
/// keys common to every kind are taken out first ([`take`](Self::take)),
/// and the kind's own struct, which denies unknown keys, gets the rest.
#[derive(Debug)]
pub(super) struct ComponentFields<'text> {
    span: Range<usize>,
    fields: DeTable<'text>,
}

impl<'text> ComponentFields<'text> {
    /// Removes `key` from the table and deserializes its value, if the
    /// table has it. An error keeps the value's position.
    pub(super) fn take<T: Deserialize<'text>>(
        &mut self,
        key: &str,
    ) -> Result<Option<T>, toml::de::Error> {
        match self.fields.remove(key) {
            Some(value) => T::deserialize(ValueDeserializer::from(value)).map(Some),
            None => Ok(None),
        }
    }

    /// The keys left, for the kind's own struct.
    pub(super) fn into_deserializer(self) -> ValueDeserializer<'text> {
        ValueDeserializer::from(Spanned::new(self.span, DeValue::Table(self.fields)))
    }
}

/// A line of the config file, for messages: "line 7" and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLine {
    /// 1-based.
    pub number: usize,
    pub text: String,
}

impl KeyLine {
    fn at(text: &str, offset: usize) -> KeyLine {
        let offset = floor_char_boundary(text, offset);
        let line_start = text[..offset].rfind('\n').map_or(0, |newline| newline + 1);
        KeyLine {
            number: text[..offset].bytes().filter(|&byte| byte == b'\n').count() + 1,
            text: text[line_start..].lines().next().unwrap_or("").to_string(),
        }
    }
}

impl std::fmt::Display for KeyLine {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "line {}", self.number)
    }
}

fn floor_char_boundary(text: &str, offset: usize) -> usize {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// Formats "line L, column C: message" plus the offending line.
fn describe(text: &str, span: Option<Range<usize>>, message: &str) -> String {
    let message = message.trim_end();
    let Some(span) = span else {
        return message.to_string();
    };
    let start = floor_char_boundary(text, span.start);
    let line = KeyLine::at(text, start);
    let line_start = text[..start].rfind('\n').map_or(0, |newline| newline + 1);
    let column = text[line_start..start].chars().count() + 1;
    format!(
        "line {}, column {column}: {message}\n  | {}",
        line.number, line.text
    )
}

/// The span of the key at `key_path`, or of the last key on the path that
/// is written in the file (a table, when the key has its default).
fn key_span(root: &DeTable<'_>, key_path: &[&str]) -> Option<Range<usize>> {
    let mut table = root;
    let mut found = None;
    for segment in key_path {
        let Some((key, value)) = table.get_key_value(*segment) else {
            break;
        };
        found = Some(key.span());
        match value.get_ref() {
            DeValue::Table(inner) => table = inner,
            _ => break,
        }
    }
    found
}

fn value_at<'table, 'text>(
    root: &'table DeTable<'text>,
    key_path: &[&str],
) -> Option<&'table Spanned<DeValue<'text>>> {
    let (last, parents) = key_path.split_last()?;
    let mut table = root;
    for segment in parents {
        match table.get(*segment)?.get_ref() {
            DeValue::Table(inner) => table = inner,
            _ => return None,
        }
    }
    table.get(*last)
}

/// The dotted path of the key whose (non-table) value holds `span`. Every
/// table is searched: the span of a `[table]` need not cover its keys.
fn key_path_at(table: &DeTable<'_>, span: &Range<usize>) -> Option<String> {
    for (key, value) in table {
        let key_name: &str = key.get_ref();
        if let DeValue::Table(inner) = value.get_ref() {
            if let Some(inner_path) = key_path_at(inner, span) {
                return Some(format!("{key_name}.{inner_path}"));
            }
            continue;
        }
        let value_span = value.span();
        if value_span.start <= span.start && span.end <= value_span.end {
            return Some(key_name.to_string());
        }
    }
    None
}

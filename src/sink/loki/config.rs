//! `[sinks.<id>] type = "loki"`: the keys, their defaults and their checks.
//!
//! Stream labels: `labels` names the entry labels that become Loki stream
//! labels (default `source_id`, `host`, `app`, `severity`, each where an
//! entry has it). Loki keeps an index and open chunks per stream, so a
//! label whose values have no bound (`file` with a glob over many files,
//! `procid`, `msgid`) multiplies streams and Loki's memory; such labels
//! are only used when named, and `check-config` warns about them. Every
//! other label of an entry stays out of the stream (with `encoding =
//! "json"` they travel inside the line).

use std::collections::BTreeMap;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;

use serde::Deserialize;

use crate::sink::encode::Encoding;

/// The push format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LokiFormat {
    /// `logproto.PushRequest`, snappy block format: Loki's native push.
    #[default]
    Protobuf,
    /// Loki's JSON push body.
    Json,
}

/// Compression of a JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LokiCompression {
    #[default]
    None,
    Gzip,
}

/// What becomes of an entry older than `max_entry_age_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OldEntries {
    /// Sent with the oldest time still accepted.
    #[default]
    Clamp,
    /// Stored in the sink's `rejected/` DLQ area.
    Reject,
}

/// `basic_auth = { user, password }`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// `type = "loki"`: push batches to Grafana Loki.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LokiSinkConfig {
    /// The push endpoint, e.g. `http://127.0.0.1:3100/loki/api/v1/push`.
    pub url: String,
    /// Sent as `X-Scope-OrgID`.
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// PEM file of the certificate authorities an `https` URL is checked
    /// against (default: Mozilla's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate. Only when asked.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Entry labels that become stream labels.
    #[serde(default = "default_stream_labels")]
    pub labels: Vec<String>,
    /// Labels added to every stream.
    #[serde(default)]
    pub static_labels: BTreeMap<String, String>,
    /// How the line of an entry is written.
    #[serde(default)]
    pub encoding: Encoding,
    #[serde(default)]
    pub format: LokiFormat,
    /// For `format = "json"` only.
    #[serde(default)]
    pub compression: LokiCompression,
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: NonZeroU64,
    /// Most bytes of lines (and their stream text) in one request; a line
    /// that cannot fit alone is rejected (`rejected/`, `line_too_long`).
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: NonZeroUsize,
    /// Entries older than this are clamped or rejected (`old_entries`).
    #[serde(default = "default_max_entry_age_ms")]
    pub max_entry_age_ms: NonZeroU64,
    #[serde(default)]
    pub old_entries: OldEntries,
    /// How long the breaker stays open after a failed request that gave no
    /// `Retry-After`; then one request is let through to probe.
    #[serde(default = "default_probe_interval_ms")]
    pub probe_interval_ms: NonZeroU64,
}

/// The stream labels used when `labels` is not set.
pub const STREAM_LABELS_DEFAULT: [&str; 4] = ["source_id", "host", "app", "severity"];

/// Entry labels whose values have no bound: each value is a stream.
pub const UNBOUNDED_LABELS: [&str; 4] = ["file", "procid", "msgid", "container_id"];

/// Smallest `max_request_bytes`.
pub const MAX_REQUEST_BYTES_MIN: usize = 1024;

/// Longest label value Loki accepts by default (`max_label_value_length`).
pub const LABEL_VALUE_BYTES_MAX: usize = 2048;

fn default_stream_labels() -> Vec<String> {
    STREAM_LABELS_DEFAULT.map(str::to_string).to_vec()
}

fn default_request_timeout_ms() -> NonZeroU64 {
    // A hanging Loki holds the sink, and so the batches all sinks share,
    // this long once before the breaker opens: short enough that the other
    // sinks' batches in flight cover it at tens of thousands of lines/s.
    NonZeroU64::new(5_000).expect("not zero")
}

fn default_max_request_bytes() -> NonZeroUsize {
    NonZeroUsize::new(4 * 1024 * 1024).expect("not zero")
}

fn default_max_entry_age_ms() -> NonZeroU64 {
    // Loki's `reject_old_samples_max_age` default: one week.
    NonZeroU64::new(7 * 24 * 3600 * 1000).expect("not zero")
}

fn default_probe_interval_ms() -> NonZeroU64 {
    NonZeroU64::new(1000).expect("not zero")
}

/// A Prometheus label name that Loki accepts: `[a-zA-Z_][a-zA-Z0-9_]*`,
/// not starting with `__` (reserved).
pub fn label_name_problem(name: &str) -> Option<&'static str> {
    let mut bytes = name.bytes();
    let first = bytes.next()?;
    if !(first.is_ascii_alphabetic() || first == b'_') {
        return Some("a label name starts with a letter or `_`");
    }
    if !bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_') {
        return Some("a label name holds only letters, digits and `_`");
    }
    if name.starts_with("__") {
        return Some("label names starting with `__` are reserved by Loki");
    }
    None
}

/// Loki's tenant ID rules: 1 to 150 bytes of letters, digits and
/// `!-_.*'()`, not `.` or `..`.
fn tenant_problem(tenant: &str) -> Option<&'static str> {
    if tenant.is_empty() || tenant.len() > 150 {
        return Some("a tenant ID has 1 to 150 characters");
    }
    if tenant == "." || tenant == ".." {
        return Some("`.` and `..` are not tenant IDs");
    }
    let allowed = |byte: u8| byte.is_ascii_alphanumeric() || b"!-_.*'()".contains(&byte);
    if !tenant.bytes().all(allowed) {
        return Some("a tenant ID holds only letters, digits and !-_.*'()");
    }
    None
}

impl LokiSinkConfig {
    /// Checks what parsing cannot: `Err((key, reason))`.
    pub fn problems(&self) -> Result<(), (String, String)> {
        self.check_url()?;
        self.check_labels()?;
        if self.compression == LokiCompression::Gzip && self.format == LokiFormat::Protobuf {
            return Err((
                "compression".to_string(),
                "gzip applies to format = \"json\"; protobuf bodies are always snappy-compressed"
                    .to_string(),
            ));
        }
        if self.max_request_bytes.get() < MAX_REQUEST_BYTES_MIN {
            return Err((
                "max_request_bytes".to_string(),
                format!("at least {MAX_REQUEST_BYTES_MIN}"),
            ));
        }
        if let Some(tenant) = &self.tenant_id
            && let Some(reason) = tenant_problem(tenant)
        {
            return Err(("tenant_id".to_string(), format!("{tenant:?}: {reason}")));
        }
        if let Some(auth) = &self.basic_auth
            && auth.user.contains(':')
        {
            return Err((
                "basic_auth.user".to_string(),
                "a basic auth user name cannot contain `:`".to_string(),
            ));
        }
        Ok(())
    }

    fn check_url(&self) -> Result<(), (String, String)> {
        let problem = |reason: String| Err(("url".to_string(), reason));
        let uri: ureq::http::Uri = match self.url.parse() {
            Ok(uri) => uri,
            Err(error) => return problem(format!("{:?} is not a URL: {error}", self.url)),
        };
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return problem(format!("{:?}: the scheme is http or https", self.url)),
        };
        if uri.host().is_none_or(str::is_empty) {
            return problem(format!("{:?} names no host", self.url));
        }
        if matches!(uri.path(), "" | "/") {
            return problem(format!(
                "{:?} names no push path (Loki's is /loki/api/v1/push)",
                self.url
            ));
        }
        if !https && (self.ca_file.is_some() || self.insecure_skip_verify) {
            let key = if self.ca_file.is_some() {
                "ca_file"
            } else {
                "insecure_skip_verify"
            };
            return Err((
                key.to_string(),
                format!("applies to an https url, and url is {:?}", self.url),
            ));
        }
        Ok(())
    }

    fn check_labels(&self) -> Result<(), (String, String)> {
        for (index, name) in self.labels.iter().enumerate() {
            let key = format!("labels[{index}]");
            if let Some(reason) = label_name_problem(name) {
                return Err((key, format!("{name:?}: {reason}")));
            }
            if self.labels[..index].contains(name) {
                return Err((key, format!("{name:?} is listed twice")));
            }
            if self.static_labels.contains_key(name) {
                return Err((
                    key,
                    format!("{name:?} is also a static label: one of them would be lost"),
                ));
            }
        }
        for (name, value) in &self.static_labels {
            let key = format!("static_labels.{name}");
            if let Some(reason) = label_name_problem(name) {
                return Err((key, format!("{name:?}: {reason}")));
            }
            if value.is_empty() || value.len() > LABEL_VALUE_BYTES_MAX {
                return Err((
                    key,
                    format!("a label value has 1 to {LABEL_VALUE_BYTES_MAX} bytes"),
                ));
            }
        }
        if !self.labels.iter().any(|name| name == "source_id") && self.static_labels.is_empty() {
            return Err((
                "labels".to_string(),
                "every stream needs a label: list \"source_id\" (every line has it) or set \
                 static_labels"
                    .to_string(),
            ));
        }
        Ok(())
    }

    /// The configured stream labels whose values have no bound.
    pub fn unbounded_labels(&self) -> impl Iterator<Item = (usize, &str)> {
        self.labels
            .iter()
            .enumerate()
            .filter(|(_, name)| UNBOUNDED_LABELS.contains(&name.as_str()))
            .map(|(index, name)| (index, name.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> LokiSinkConfig {
        toml::from_str(text).expect("parses")
    }

    #[test]
    fn defaults_are_protobuf_raw_and_bounded_labels() {
        let config = parse("url = \"http://127.0.0.1:3100/loki/api/v1/push\"");
        assert_eq!(config.format, LokiFormat::Protobuf);
        assert_eq!(config.encoding, Encoding::Raw);
        assert_eq!(config.labels, STREAM_LABELS_DEFAULT);
        assert_eq!(config.old_entries, OldEntries::Clamp);
        assert!(config.problems().is_ok());
        assert_eq!(config.unbounded_labels().count(), 0);
    }

    #[test]
    fn problems_name_their_key() {
        let cases = [
            ("url = \"ftp://x/push\"", "url"),
            ("url = \"http:///push\"", "url"),
            (
                "url = \"http://x/push\"\nca_file = \"/etc/ca.pem\"",
                "ca_file",
            ),
            (
                "url = \"http://x/push\"\nlabels = [\"source_id\", \"bad-name\"]",
                "labels[1]",
            ),
            (
                "url = \"http://x/push\"\nlabels = [\"source_id\", \"source_id\"]",
                "labels[1]",
            ),
            (
                "url = \"http://x/push\"\nlabels = [\"__name\"]\nstatic_labels = { env = \"x\" }",
                "labels[0]",
            ),
            ("url = \"http://x/push\"\nlabels = [\"app\"]", "labels"),
            (
                "url = \"http://x/push\"\nstatic_labels = { source_id = \"x\" }",
                "labels[0]",
            ),
            (
                "url = \"http://x/push\"\nstatic_labels = { env = \"\" }",
                "static_labels.env",
            ),
            (
                "url = \"http://x/push\"\ncompression = \"gzip\"",
                "compression",
            ),
            (
                "url = \"http://x/push\"\nmax_request_bytes = 10",
                "max_request_bytes",
            ),
            ("url = \"http://x/push\"\ntenant_id = \"\"", "tenant_id"),
            (
                "url = \"http://x/push\"\ntenant_id = \"a b|c\"",
                "tenant_id",
            ),
            ("url = \"http://x:3100\"", "url"),
            ("url = \"http://x:3100/\"", "url"),
            (
                "url = \"http://x/push\"\nbasic_auth = { user = \"a:b\", password = \"p\" }",
                "basic_auth.user",
            ),
        ];
        for (text, key) in cases {
            let (found, reason) = parse(text).problems().expect_err(text);
            assert_eq!(found, key, "{text}: {reason}");
        }
    }

    #[test]
    fn unbounded_labels_are_found() {
        let config = parse("url = \"http://x/push\"\nlabels = [\"source_id\", \"file\"]");
        assert_eq!(config.unbounded_labels().collect::<Vec<_>>(), [(1, "file")]);
        let debug = format!(
            "{:?}",
            parse("url = \"http://x/push\"\nbasic_auth = { user = \"u\", password = \"secret\" }")
        );
        assert!(!debug.contains("secret"), "{debug}");
    }
}

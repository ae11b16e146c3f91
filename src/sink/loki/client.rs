//! The HTTP side of a Loki sink: one `ureq` agent on the sink's thread,
//! one request at a time, connections kept and reused.
//!
//! Thread: the sink's; a push blocks it for at most `request_timeout_ms`.
//! Requests in flight: one. Allocations: per request inside `ureq`
//! (headers, the response), none per line; the gzip buffer grows to the
//! largest body and is kept. Bodies of answers are read up to
//! [`ANSWER_BODY_BYTES_MAX`] (Loki's are short), so that the connection can
//! be reused.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use ureq::http::Uri;
use ureq::http::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue};
use ureq::tls::{PemItem, RootCerts, TlsConfig};

use crate::sink::loki::config::{LokiCompression, LokiFormat, LokiSinkConfig};
use crate::sink::loki::response::{self, Answer, ErrorType};

/// Most bytes of an answer's body read.
pub const ANSWER_BODY_BYTES_MAX: u64 = 64 * 1024;

/// Why a Loki client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LokiClientError {
    #[error("sink {sink}: cannot read ca_file {path}")]
    CaFile {
        sink: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sink {sink}: ca_file {path} holds no PEM certificate")]
    CaFileEmpty { sink: String, path: PathBuf },
    #[error("sink {sink}: url {url:?} is not a URL")]
    Url { sink: String, url: String },
    #[error("sink {sink}: {key} is not a valid HTTP header value")]
    Header { sink: String, key: &'static str },
}

/// A push's answer, and the first bytes of Loki's message for the log.
#[derive(Debug)]
pub struct Pushed {
    pub answer: Answer,
    pub status: Option<u16>,
    pub message: String,
}

impl Pushed {
    /// The HTTP status for a log line, or `none` when there was no answer.
    pub fn status_text(&self) -> String {
        self.status
            .map_or_else(|| "none".to_string(), |status| status.to_string())
    }
}

/// Loki's tenant header (`X-Scope-OrgID`), lower-cased as `http` keeps
/// header names.
const TENANT_HEADER: HeaderName = HeaderName::from_static("x-scope-orgid");

/// The request's target and headers are parsed once, here: a request then
/// clones them (reference counts), so that a push does not allocate to
/// parse the URL or copy header values.
pub struct LokiClient {
    agent: ureq::Agent,
    url: String,
    uri: Uri,
    content_type: HeaderValue,
    gzip: bool,
    tenant_id: Option<HeaderValue>,
    authorization: Option<HeaderValue>,
    gzipped: Vec<u8>,
}

impl std::fmt::Debug for LokiClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LokiClient")
            .field("url", &self.url)
            .field("content_type", &self.content_type)
            .field("gzip", &self.gzip)
            .finish_non_exhaustive()
    }
}

impl LokiClient {
    pub fn new(sink: &str, config: &LokiSinkConfig) -> Result<Self, LokiClientError> {
        let mut tls = TlsConfig::builder().disable_verification(config.insecure_skip_verify);
        if let Some(path) = &config.ca_file {
            tls = tls.root_certs(root_certs(sink, path)?);
        }
        let agent_config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_millis(config.request_timeout_ms.get())))
            .user_agent(concat!("log-capturer/", env!("CARGO_PKG_VERSION")))
            .max_redirects(0)
            .max_idle_connections(2)
            .max_idle_connections_per_host(2)
            .tls_config(tls.build())
            .build();
        let header = |key: &'static str, value: String| {
            HeaderValue::try_from(value).map_err(|_| LokiClientError::Header {
                sink: sink.to_string(),
                key,
            })
        };
        let authorization = config
            .basic_auth
            .as_ref()
            .map(|auth| {
                let pair = format!("{}:{}", auth.user, auth.password);
                header("basic_auth", format!("Basic {}", base64(pair.as_bytes())))
            })
            .transpose()?;
        let tenant_id = config
            .tenant_id
            .clone()
            .map(|tenant| header("tenant_id", tenant))
            .transpose()?;
        let uri = config.url.parse().map_err(|_| LokiClientError::Url {
            sink: sink.to_string(),
            url: config.url.clone(),
        })?;
        Ok(Self {
            agent: agent_config.into(),
            url: config.url.clone(),
            uri,
            content_type: HeaderValue::from_static(match config.format {
                LokiFormat::Protobuf => "application/x-protobuf",
                LokiFormat::Json => "application/json",
            }),
            gzip: config.compression == LokiCompression::Gzip,
            tenant_id,
            authorization,
            gzipped: Vec::new(),
        })
    }

    /// Sends one body and tells what the answer means, within `timeout`
    /// if given (else `request_timeout_ms`). Returns the bytes sent.
    pub fn push(&mut self, body: &[u8], timeout: Option<Duration>) -> (Pushed, usize) {
        let body = if self.gzip {
            self.gzipped.clear();
            let mut encoder = GzEncoder::new(&mut self.gzipped, Compression::fast());
            encoder
                .write_all(body)
                .and_then(|()| encoder.finish().map(drop))
                .expect("writing to memory cannot fail");
            &self.gzipped[..]
        } else {
            body
        };
        let mut request = self
            .agent
            .post(self.uri.clone())
            .header(CONTENT_TYPE, self.content_type.clone());
        if self.gzip {
            request = request.header(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        if let Some(tenant) = &self.tenant_id {
            request = request.header(TENANT_HEADER, tenant.clone());
        }
        if let Some(authorization) = &self.authorization {
            request = request.header(ureq::http::header::AUTHORIZATION, authorization.clone());
        }
        if let Some(timeout) = timeout {
            request = request.config().timeout_global(Some(timeout)).build();
        }
        let pushed = match request.send(body) {
            Ok(response) => answered(response),
            Err(error) => Pushed {
                answer: Answer::Retry {
                    error: transport_error_type(&error),
                    after: None,
                },
                status: None,
                message: error.to_string(),
            },
        };
        (pushed, body.len())
    }
}

fn answered(mut response: ureq::http::Response<ureq::Body>) -> Pushed {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.as_bytes().to_vec());
    let mut body = Vec::new();
    // Read to the end (within the bound) so that the connection is reused;
    // a body that cannot be read only loses its text.
    let _ = response
        .body_mut()
        .as_reader()
        .take(ANSWER_BODY_BYTES_MAX)
        .read_to_end(&mut body);
    let now_unix_s = (crate::clock::now_ns() / 1_000_000_000) as i64;
    let answer = response::classify(status, retry_after.as_deref(), &body, now_unix_s);
    let message = if matches!(answer, Answer::Accepted) {
        String::new()
    } else {
        let text = String::from_utf8_lossy(&body);
        let text = text.trim();
        let end = text.floor_char_boundary(512);
        text[..end].to_string()
    };
    Pushed {
        answer,
        status: Some(status),
        message,
    }
}

fn transport_error_type(error: &ureq::Error) -> ErrorType {
    match error {
        ureq::Error::Timeout(_) => ErrorType::Timeout,
        ureq::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) =>
        {
            ErrorType::Timeout
        }
        _ => ErrorType::Transport,
    }
}

fn root_certs(sink: &str, path: &Path) -> Result<RootCerts, LokiClientError> {
    let pem = std::fs::read(path).map_err(|source| LokiClientError::CaFile {
        sink: sink.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    let certificates: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(certificate)) => Some(certificate.to_owned()),
            _ => None,
        })
        .collect();
    if certificates.is_empty() {
        return Err(LokiClientError::CaFileEmpty {
            sink: sink.to_string(),
            path: path.to_path_buf(),
        });
    }
    Ok(RootCerts::new_with_certs(&certificates))
}

/// Standard base64 with padding (RFC 4648), for the basic auth header.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let word = u32::from(chunk[0]) << 16
            | u32::from(*chunk.get(1).unwrap_or(&0)) << 8
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for position in 0..4 {
            if position <= chunk.len() {
                out.push(ALPHABET[(word >> (18 - 6 * position) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("user:pass", "dXNlcjpwYXNz"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected, "{input}");
        }
    }
}

//! What Loki's answer to a push means: delivered, worth retrying (and
//! when), or refused for good (and why).
//!
//! Measured on Loki 2.7.3 (`../shared/loki/README.md`): 204 on success;
//! 429 when over a rate limit; 5xx when an ingester is not ready; 400 for
//! entries it will never take (too far behind their stream, too new, a
//! line too long, bad labels). On a 400 Loki has still stored the valid
//! entries of the request; its body names only the last ignored entry and,
//! for out-of-order refusals, ends with `total ignored: N out of M`, where
//! the counts are those of one stream. The body is read here only to name
//! the reason and the counts: nothing else is trusted from it.
//!
//! Everything here reads bytes from the network and is fuzzed
//! (`fuzz/fuzz_targets/loki_response.rs`).

use std::time::Duration;

use crate::sink::link::Rejection;

/// Why a push failed, as counted in
/// `log_capturer_loki_error_type_total{error_type}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// No answer: connection refused or reset, TLS, name resolution.
    Transport,
    /// No answer within `request_timeout_ms`.
    Timeout,
    /// 429.
    RateLimited,
    /// 5xx.
    ServerError,
    /// 401, 403, 407: credentials (kept for retry until they are fixed).
    Unauthorized,
    /// Another 4xx that is not about the entries (404, 405, ...).
    ClientError,
    /// 400: an entry older than its stream accepts.
    TooOld,
    /// 400: an entry too far in the future.
    TooNew,
    /// 400 or 413: a line or request too long.
    LineTooLong,
    /// 400: labels Loki refuses.
    Labels,
    /// 400 for another reason.
    BadRequest,
}

impl ErrorType {
    pub const ALL: [ErrorType; 11] = [
        ErrorType::Transport,
        ErrorType::Timeout,
        ErrorType::RateLimited,
        ErrorType::ServerError,
        ErrorType::Unauthorized,
        ErrorType::ClientError,
        ErrorType::TooOld,
        ErrorType::TooNew,
        ErrorType::LineTooLong,
        ErrorType::Labels,
        ErrorType::BadRequest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Transport => "transport",
            ErrorType::Timeout => "timeout",
            ErrorType::RateLimited => "rate_limited",
            ErrorType::ServerError => "server_error",
            ErrorType::Unauthorized => "unauthorized",
            ErrorType::ClientError => "client_error",
            ErrorType::TooOld => "too_old",
            ErrorType::TooNew => "too_new",
            ErrorType::LineTooLong => "line_too_long",
            ErrorType::Labels => "labels",
            ErrorType::BadRequest => "bad_request",
        }
    }

    /// The reason stored with a refused entry in `rejected/`.
    pub fn rejection(self) -> Rejection {
        match self {
            ErrorType::TooOld => Rejection::TooOld,
            ErrorType::TooNew => Rejection::TooNew,
            ErrorType::LineTooLong => Rejection::LineTooLong,
            ErrorType::Labels => Rejection::InvalidLabels,
            _ => Rejection::Refused,
        }
    }
}

/// What an answer means for the entries of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 2xx: every entry is stored.
    Accepted,
    /// Nothing can be known stored; send again, not before `after` if
    /// Loki said so (`Retry-After`).
    Retry {
        error: ErrorType,
        after: Option<Duration>,
    },
    /// Some entries are refused for good (the others are stored):
    /// `ignored` is Loki's `total ignored: N out of M` when it gave one.
    Refused {
        error: ErrorType,
        ignored: Option<(u32, u32)>,
    },
}

/// Longest wait a `Retry-After` can impose: a longer one is taken as this.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

/// The meaning of an HTTP answer. `retry_after` is the header's value;
/// `now_unix_s` is the time a date in it is measured from.
pub fn classify(status: u16, retry_after: Option<&[u8]>, body: &[u8], now_unix_s: i64) -> Answer {
    let after = || retry_after.and_then(|value| parse_retry_after(value, now_unix_s));
    match status {
        200..=299 => Answer::Accepted,
        400 => Answer::Refused {
            error: refusal_of(body),
            ignored: ignored_counts(body),
        },
        413 => Answer::Refused {
            error: ErrorType::LineTooLong,
            ignored: None,
        },
        429 => Answer::Retry {
            error: ErrorType::RateLimited,
            after: after(),
        },
        401 | 403 | 407 => Answer::Retry {
            error: ErrorType::Unauthorized,
            after: None,
        },
        408 => Answer::Retry {
            error: ErrorType::Timeout,
            after: None,
        },
        500..=599 => Answer::Retry {
            error: ErrorType::ServerError,
            after: after(),
        },
        _ => Answer::Retry {
            error: ErrorType::ClientError,
            after: None,
        },
    }
}

/// The reason of a 400, from Loki's message.
pub fn refusal_of(body: &[u8]) -> ErrorType {
    let has = |needle: &str| contains_ignore_case(body, needle.as_bytes());
    if has("too far behind") || has("too old") || has("out of order") {
        ErrorType::TooOld
    } else if has("too new") || has("in the future") {
        ErrorType::TooNew
    } else if has("line size") || has("line too long") || has("line length") {
        ErrorType::LineTooLong
    } else if has("label") {
        ErrorType::Labels
    } else {
        ErrorType::BadRequest
    }
}

/// `total ignored: N out of M`, if the body ends its list with it.
pub fn ignored_counts(body: &[u8]) -> Option<(u32, u32)> {
    const MARK: &[u8] = b"total ignored: ";
    let start = find(body, MARK)? + MARK.len();
    let rest = &body[start..];
    let (ignored, rest) = leading_number(rest)?;
    let rest = rest.strip_prefix(b" out of ")?;
    let (total, _) = leading_number(rest)?;
    (ignored <= total).then_some((ignored, total))
}

/// `Retry-After`: delay seconds, or an HTTP date (RFC 9110, the IMF-fixdate
/// form and RFC 2822 forms). A time already past means no wait.
pub fn parse_retry_after(value: &[u8], now_unix_s: i64) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        let seconds: u64 = text.parse().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds).min(RETRY_AFTER_MAX));
    }
    let at = jiff::fmt::rfc2822::parse(text)
        .ok()?
        .timestamp()
        .as_second();
    let seconds = u64::try_from(at.saturating_sub(now_unix_s)).unwrap_or(0);
    Some(Duration::from_secs(seconds).min(RETRY_AFTER_MAX))
}

fn leading_number(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let digits = bytes
        .iter()
        .take_while(|byte| byte.is_ascii_digit())
        .count();
    if digits == 0 || digits > 9 {
        return None;
    }
    let value = std::str::from_utf8(&bytes[..digits]).ok()?.parse().ok()?;
    Some((value, &bytes[digits..]))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loki 2.7.3's body for an entry more than an hour behind its stream.
    const BEHIND: &[u8] = b"entry with timestamp 2026-11-27 10:00:00 +0000 UTC ignored, reason: 'entry too far behind, oldest acceptable timestamp is: 2026-11-27T11:00:00Z' for stream: {app=\"x\"},\ntotal ignored: 1 out of 3";

    #[test]
    fn statuses_are_told_apart() {
        assert_eq!(classify(204, None, b"", 0), Answer::Accepted);
        assert_eq!(
            classify(400, None, BEHIND, 0),
            Answer::Refused {
                error: ErrorType::TooOld,
                ignored: Some((1, 3))
            }
        );
        assert_eq!(
            classify(429, Some(b"2"), b"", 0),
            Answer::Retry {
                error: ErrorType::RateLimited,
                after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(
            classify(503, None, b"", 0),
            Answer::Retry {
                error: ErrorType::ServerError,
                after: None
            }
        );
        assert!(matches!(
            classify(401, None, b"", 0),
            Answer::Retry {
                error: ErrorType::Unauthorized,
                ..
            }
        ));
        assert!(matches!(
            classify(404, None, b"", 0),
            Answer::Retry {
                error: ErrorType::ClientError,
                ..
            }
        ));
        assert!(matches!(
            classify(413, None, b"", 0),
            Answer::Refused {
                error: ErrorType::LineTooLong,
                ..
            }
        ));
    }

    #[test]
    fn refusal_reasons_are_read_from_lokis_messages() {
        let cases: [(&[u8], ErrorType); 6] = [
            (
                b"entry for stream '{a=\"b\"}' has timestamp too new: 2030-01-01",
                ErrorType::TooNew,
            ),
            (
                b"entry for stream '{a=\"b\"}' has timestamp too old: 2020-01-01",
                ErrorType::TooOld,
            ),
            (
                b"Max entry size '256 KiB' exceeded while adding 300 KiB ... max line size",
                ErrorType::LineTooLong,
            ),
            (
                b"error at least one label pair is required per stream",
                ErrorType::Labels,
            ),
            (b"invalid label name", ErrorType::Labels),
            (b"unexpected EOF", ErrorType::BadRequest),
        ];
        for (body, expected) in cases {
            assert_eq!(
                refusal_of(body),
                expected,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(ignored_counts(b"total ignored: 7 out of 7"), Some((7, 7)));
        assert_eq!(ignored_counts(b"total ignored: 8 out of 7"), None);
        assert_eq!(ignored_counts(b"total ignored: x out of 7"), None);
        assert_eq!(ignored_counts(b"total ignored: 99999999999 out of 7"), None);
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(parse_retry_after(b" 3 ", 0), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(b"99999999999999999999", 0),
            Some(RETRY_AFTER_MAX)
        );
        // Wed, 21 Oct 2015 07:28:00 GMT is 1445412480.
        assert_eq!(
            parse_retry_after(b"Wed, 21 Oct 2015 07:28:00 GMT", 1_445_412_470),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after(b"Wed, 21 Oct 2015 07:28:00 GMT", 1_445_412_490),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(b"soon", 0), None);
        assert_eq!(parse_retry_after(b"\xff", 0), None);
    }
}

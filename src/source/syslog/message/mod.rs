//! Syslog message parsing: RFC 5424 and RFC 3164 ("BSD") messages into
//! borrowed fields.
//!
//! Thread: whichever thread receives the messages; nothing here is shared.
//! A [`TimeContext`] belongs to one thread (it caches, so parsing takes it
//! `&mut`).
//!
//! Limits: the RFC 5424 field lengths below ([`HOSTNAME_BYTES_MAX`] and
//! the others), a tag NAME of [`TAG_NAME_BYTES_MAX`], fractions of 9
//! digits. A message itself has no limit here: the caller's framing bounds
//! it. Every loop advances through the input, so parsing is linear in the
//! input's length.
//!
//! Allocations: none. [`parse`] and its two halves borrow every field from
//! the input; [`ParseError`] is `Copy`. [`unescape_param_value`] appends to
//! the caller's buffer. [`TimeContext::named`] reads the zone once.
//!
//! # Detection
//!
//! `<PRI>` then `1 ` (version 1 and a space) is RFC 5424; anything else is
//! RFC 3164, including a message without `<PRI>` (priority `None`). A
//! leading `<` that does not begin a valid PRI (`<0>`..`<191>`, 1 to 3
//! digits, no leading zero but in `<0>`) is an error in both formats.
//!
//! # RFC 5424
//!
//! Strict, as the RFC's ABNF (§6), with two allowances real senders need:
//! fraction digits 1 to 9 (the RFC says at most 6) and an unescaped `]`
//! inside a quoted PARAM-VALUE. `-` gives `None` for every header field
//! and for the structured data; the message may end right after the
//! structured data (no MSG) or after its space (empty MSG). A UTF-8 BOM
//! starting MSG is not part of [`Message::message`]. [`Message::structured_data`]
//! is the field exactly as sent, escapes included; [`structured_data_params`]
//! walks it and [`unescape_param_value`] decodes a value.
//!
//! Errors: no or bad PRI, a version other than `1 `, a header field missing
//! (the message ends before it), empty (two spaces), longer than the RFC
//! allows (HOSTNAME 255, APP-NAME 48, PROCID 128, MSGID 32 bytes) or
//! holding a byte outside printable US-ASCII (33..=126); a timestamp that
//! is not `YYYY-MM-DDThh:mm:ss[.f](Z|±hh:mm)` with every field in range
//! (no leap second); structured data that is not one or more
//! `[SD-ID *(SP PARAM-NAME="PARAM-VALUE")]` (names 1 to 32 printable bytes
//! but `=`, space, `]`, `"`; values closed by an unescaped `"` and UTF-8);
//! structured data followed by anything but a space or the end.
//!
//! # RFC 3164
//!
//! RFC 3164 describes what it saw, not a grammar, so this side is
//! heuristic and never fails on the layout, only on what would become a
//! bad label. After the optional PRI:
//!
//! 1. Timestamp: an RFC 3339 one (rsyslog's forward format), or a BSD one,
//!    `Mmm dd hh:mm:ss` with the day space-padded, unpadded or 2 digits,
//!    a fraction of 1 to 9 digits, and a year before the time or after
//!    it and a zone after the time (`UTC`, `GMT`, `Z`, `±hhmm`, `±hh:mm`;
//!    a common abbreviation followed by more text, such as `CET` or `PST`,
//!    gives its offset; an ambiguous one such as `CST` or `IST` is skipped
//!    and the context's zone applies; an upper-case host name such as
//!    `NAS` is not taken for one). A missing
//!    year is the receive time's year in the context's zone, the year
//!    before for a date more than 31 days ahead of the receive date, the
//!    year after for one more than 334 days behind. A timestamp must end
//!    at a space or at the end; one that does not, or that names an
//!    impossible date, is not a timestamp.
//! 2. With a timestamp: if the next word (up to a space) is a tag, there is
//!    no host (glibc's `syslog()` sends none). Otherwise a word followed by
//!    more text is the host, and a tag may follow it. A lone last word is
//!    the message, not a host.
//! 3. Without a timestamp: no host (senders that leave out the timestamp
//!    leave out the host); a tag if the first word is one; the rest is the
//!    message.
//!
//! A tag is `NAME:` or `NAME[PID]:` ending the word, or `NAME[PID]:`
//! directly followed by text: NAME 1 to [`TAG_NAME_BYTES_MAX`] bytes
//! without `[` or `]`, PID 1 to [`PROCID_BYTES_MAX`] bytes without them
//! (an empty `[]` gives no procid). A word that is an IPv6 address
//! (`fe80::`) is never a tag. A host is at most [`HOSTNAME_BYTES_MAX`]
//! bytes; a longer word is not a host. One space after the timestamp, the
//! host and the tag is a separator; the message is everything after.
//!
//! Errors: no or bad PRI, an empty input or a PRI alone, and a host or tag
//! (NAME or PID) that is not UTF-8.
//!
//! # Both
//!
//! The message body may hold any bytes. Framing is the caller's: a trailing
//! newline is part of the message (and, in RFC 5424 without MSG, an error
//! after the structured data). [`Message::message`] is always a suffix of
//! the input, and every borrowed field a sub-slice of it.

#![forbid(unsafe_code)]

mod rfc3164;
mod rfc5424;
mod structured_data;
mod timestamp;

#[cfg(test)]
mod tests;

pub use rfc3164::parse_rfc3164;
pub use rfc5424::parse_rfc5424;
pub use structured_data::{
    SdParam, StructuredDataParams, structured_data_params, unescape_param_value,
};
pub use timestamp::{TimeContext, TimeZoneError};

/// Longest HOSTNAME (RFC 5424 §6), and longest RFC 3164 host.
pub const HOSTNAME_BYTES_MAX: usize = 255;
/// Longest APP-NAME (RFC 5424 §6).
pub const APP_NAME_BYTES_MAX: usize = 48;
/// Longest PROCID (RFC 5424 §6), and longest PID of an RFC 3164 tag.
pub const PROCID_BYTES_MAX: usize = 128;
/// Longest MSGID (RFC 5424 §6).
pub const MSGID_BYTES_MAX: usize = 32;
/// Longest SD-NAME: SD-ID or PARAM-NAME (RFC 5424 §6).
pub const SD_NAME_BYTES_MAX: usize = 32;
/// Longest NAME of an RFC 3164 tag. RFC 3164 says 32 alphanumerics, but
/// senders put paths there (`/usr/lib/systemd/systemd-networkd-wait-online`);
/// as long as a PROCID, still bounded for a label.
pub const TAG_NAME_BYTES_MAX: usize = 128;
/// Largest PRI value: facility 23, severity 7.
pub const PRIORITY_MAX: u16 = 191;

const UTF8_BOM: &[u8; 3] = b"\xEF\xBB\xBF";

/// Which RFC a message was parsed as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Rfc5424,
    Rfc3164,
}

/// A message's `<PRI>`: facility and severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Priority {
    /// 0..=23 (see [`facility_name`]).
    pub facility: u8,
    /// 0..=7 (see [`severity_name`]).
    pub severity: u8,
}

impl Priority {
    /// The priority of a PRI value; `None` above [`PRIORITY_MAX`].
    pub fn from_value(value: u16) -> Option<Priority> {
        if value > PRIORITY_MAX {
            return None;
        }
        Some(Priority {
            facility: (value / 8) as u8,
            severity: (value % 8) as u8,
        })
    }

    /// The PRI value: `facility * 8 + severity`.
    pub fn value(self) -> u16 {
        u16::from(self.facility) * 8 + u16::from(self.severity)
    }
}

/// One parsed message; every field borrows from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub format: Format,
    /// `None` when the message had no `<PRI>` (RFC 3164 only).
    pub priority: Option<Priority>,
    /// Nanoseconds since the Unix epoch of the message's own timestamp;
    /// `None` when it had none (`-`, or no recognisable RFC 3164
    /// timestamp) or one before 1970 or after 2554.
    pub timestamp_ns: Option<u64>,
    /// HOSTNAME, or the RFC 3164 host; `None` for `-` or absent.
    pub host: Option<&'a str>,
    /// APP-NAME, or the NAME of an RFC 3164 tag, as sent (`/usr/sbin/cron`).
    pub app: Option<&'a str>,
    /// PROCID, or the PID of an RFC 3164 tag.
    pub procid: Option<&'a str>,
    /// MSGID (RFC 5424 only).
    pub msgid: Option<&'a str>,
    /// STRUCTURED-DATA exactly as sent, escapes included (RFC 5424 only);
    /// `None` for `-`. Well formed: [`structured_data_params`] over it
    /// yields no error.
    pub structured_data: Option<&'a [u8]>,
    /// MSG without a leading UTF-8 BOM; any bytes, maybe empty. Always a
    /// suffix of the input.
    pub message: &'a [u8],
}

/// A header field, as named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Timestamp,
    Hostname,
    AppName,
    ProcId,
    MsgId,
    StructuredData,
    /// The NAME or PID of an RFC 3164 tag.
    Tag,
}

impl Field {
    /// The field's name as the RFCs write it.
    pub fn name(self) -> &'static str {
        match self {
            Field::Timestamp => "timestamp",
            Field::Hostname => "hostname",
            Field::AppName => "app-name",
            Field::ProcId => "procid",
            Field::MsgId => "msgid",
            Field::StructuredData => "structured data",
            Field::Tag => "tag",
        }
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// What is wrong with an RFC 5424 timestamp.
#[derive(thiserror::Error, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampProblem {
    #[error("not YYYY-MM-DDThh:mm:ss")]
    Shape,
    #[error("month not in 01..=12")]
    Month,
    #[error("day not in the month")]
    Day,
    #[error("hour not in 00..=23")]
    Hour,
    #[error("minute not in 00..=59")]
    Minute,
    #[error("second not in 00..=59")]
    Second,
    #[error("fraction of a second not 1 to 9 digits")]
    Fraction,
    #[error("no Z or ±hh:mm offset")]
    Offset,
    #[error("followed by neither a space nor the end")]
    Trailing,
}

/// What is wrong with RFC 5424 structured data.
#[derive(thiserror::Error, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StructuredDataProblem {
    #[error("'[' expected")]
    ElementNotOpened,
    #[error("ends before ']'")]
    ElementNotClosed,
    #[error("SD-ID empty")]
    IdEmpty,
    #[error("SD-ID longer than 32 bytes")]
    IdTooLong,
    #[error("PARAM-NAME empty")]
    ParamNameEmpty,
    #[error("PARAM-NAME longer than 32 bytes")]
    ParamNameTooLong,
    #[error("byte not allowed in a name")]
    NameByte,
    #[error("'=' expected after PARAM-NAME")]
    EqualsMissing,
    #[error("PARAM-VALUE not quoted")]
    ValueNotQuoted,
    #[error("PARAM-VALUE not closed by '\"'")]
    ValueNotClosed,
    #[error("PARAM-VALUE not UTF-8")]
    ValueNotUtf8,
    #[error("' ' or ']' expected")]
    SpaceOrCloseExpected,
    #[error("' ' or end of message expected after it")]
    NotFollowedBySpace,
}

/// Why a message could not be parsed; the caller delivers it raw.
#[derive(thiserror::Error, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// No bytes at all, or nothing after the PRI.
    #[error("syslog message: empty")]
    Empty,
    /// RFC 5424 (through [`parse_rfc5424`]) requires a PRI.
    #[error("syslog priority: missing, RFC 5424 requires <PRI>")]
    PriorityMissing,
    /// `<>`.
    #[error("syslog priority: no digits in <>")]
    PriorityEmpty,
    /// A byte other than a digit or `>` within the first 3 after `<`.
    #[error("syslog priority: not a number in <...>")]
    PriorityNotNumber,
    /// No `>` after at most 3 digits.
    #[error("syslog priority: no '>' after at most 3 digits")]
    PriorityNotClosed,
    /// `<00>`, `<013>`.
    #[error("syslog priority: leading zero in <...>")]
    PriorityLeadingZero,
    #[error("syslog priority: {value} is above 191")]
    PriorityOutOfRange { value: u16 },
    /// [`parse_rfc5424`] given a version other than `1 `.
    #[error("syslog version: \"1 \" expected after <PRI>")]
    Version,
    /// The message ends before the field.
    #[error("syslog {field}: missing, the message ends before it")]
    FieldMissing { field: Field },
    /// A space where the field starts: `-` stands for no value.
    #[error("syslog {field}: empty, '-' stands for none")]
    FieldEmpty { field: Field },
    #[error("syslog {field}: longer than {bytes_max} bytes")]
    FieldTooLong { field: Field, bytes_max: usize },
    #[error(
        "syslog {field}: byte {byte:#04x} at byte {offset} of the field is not printable US-ASCII"
    )]
    FieldNotPrintable {
        field: Field,
        byte: u8,
        offset: usize,
    },
    /// An RFC 3164 host or tag that is not UTF-8 (it would become a label).
    #[error("syslog {field}: not UTF-8")]
    FieldNotUtf8 { field: Field },
    #[error("syslog timestamp: {problem}")]
    Timestamp { problem: TimestampProblem },
    /// `offset` counts from the first byte of the structured data.
    #[error("syslog structured data: {problem} at byte {offset} of the field")]
    StructuredData {
        problem: StructuredDataProblem,
        offset: usize,
    },
}

/// Parses one message, RFC 5424 or RFC 3164 as its start says (see the
/// module doc). `received_ns` (nanoseconds since the epoch) gives a
/// year-less RFC 3164 date its year.
pub fn parse<'a>(
    input: &'a [u8],
    received_ns: u64,
    time: &mut TimeContext,
) -> Result<Message<'a>, ParseError> {
    if input.first() != Some(&b'<') {
        return rfc3164::parse_after_priority(input, None, 0, received_ns, time);
    }
    let (priority, length_bytes) = parse_priority(input)?;
    if input[length_bytes..].starts_with(b"1 ") {
        rfc5424::parse_after_priority(input, priority, length_bytes)
    } else {
        rfc3164::parse_after_priority(input, Some(priority), length_bytes, received_ns, time)
    }
}

/// The `<PRI>` that starts `input` (which starts with `<`), and its length.
fn parse_priority(input: &[u8]) -> Result<(Priority, usize), ParseError> {
    debug_assert_eq!(input.first(), Some(&b'<'));
    let mut value = 0u16;
    let mut position = 1;
    // A '>' after at most 3 digits: position 4 at most.
    while position <= 4 {
        match input.get(position) {
            Some(b'>') => break,
            Some(byte) if byte.is_ascii_digit() && position < 4 => {
                value = value * 10 + u16::from(byte - b'0');
                position += 1;
            }
            Some(byte) if !byte.is_ascii_digit() => return Err(ParseError::PriorityNotNumber),
            _ => return Err(ParseError::PriorityNotClosed),
        }
    }
    let digit_count = position - 1;
    if digit_count == 0 {
        return Err(ParseError::PriorityEmpty);
    }
    if digit_count > 1 && input[1] == b'0' {
        return Err(ParseError::PriorityLeadingZero);
    }
    let priority = Priority::from_value(value).ok_or(ParseError::PriorityOutOfRange { value })?;
    Ok((priority, position + 1))
}

/// `message` without a leading UTF-8 BOM.
fn strip_bom(message: &[u8]) -> &[u8] {
    message.strip_prefix(UTF8_BOM).unwrap_or(message)
}

/// The name of a severity (RFC 5424 §6.2.1, as syslog.conf writes it);
/// `"unknown"` above 7.
pub fn severity_name(severity: u8) -> &'static str {
    const NAMES: [&str; 8] = [
        "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
    ];
    NAMES
        .get(usize::from(severity))
        .copied()
        .unwrap_or("unknown")
}

/// The name of a facility (RFC 5424 §6.2.1, as rsyslog names them);
/// `"unknown"` above 23.
pub fn facility_name(facility: u8) -> &'static str {
    const NAMES: [&str; 24] = [
        "kern",
        "user",
        "mail",
        "daemon",
        "auth",
        "syslog",
        "lpr",
        "news",
        "uucp",
        "cron",
        "authpriv",
        "ftp",
        "ntp",
        "security",
        "console",
        "solaris-cron",
        "local0",
        "local1",
        "local2",
        "local3",
        "local4",
        "local5",
        "local6",
        "local7",
    ];
    NAMES
        .get(usize::from(facility))
        .copied()
        .unwrap_or("unknown")
}

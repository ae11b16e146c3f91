//! RFC 3164: a timestamp, a host and a tag when they can be recognised,
//! and the rest as the message (the rules are in the module doc of
//! [`super`]).

use super::timestamp::{Parsed, parse_bsd, parse_rfc3339};
use super::{
    Field, Format, HOSTNAME_BYTES_MAX, Message, PROCID_BYTES_MAX, ParseError, Priority,
    TAG_NAME_BYTES_MAX, TimeContext, parse_priority, strip_bom,
};

/// Parses an RFC 3164 message; `received_ns` (nanoseconds since the epoch)
/// gives a year-less date its year, in the zone of `time`, which also
/// applies to a timestamp without a zone.
pub fn parse_rfc3164<'a>(
    input: &'a [u8],
    received_ns: u64,
    time: &mut TimeContext,
) -> Result<Message<'a>, ParseError> {
    match input.first() {
        None => Err(ParseError::Empty),
        Some(b'<') => {
            let (priority, length_bytes) = parse_priority(input)?;
            parse_after_priority(input, Some(priority), length_bytes, received_ns, time)
        }
        Some(_) => parse_after_priority(input, None, 0, received_ns, time),
    }
}

/// Parses the rest of a message whose `<PRI>`, if any, took `position` bytes.
pub(super) fn parse_after_priority<'a>(
    input: &'a [u8],
    priority: Option<Priority>,
    position: usize,
    received_ns: u64,
    time: &mut TimeContext,
) -> Result<Message<'a>, ParseError> {
    let rest = &input[position..];
    if rest.is_empty() {
        return Err(ParseError::Empty);
    }
    let (header, timestamp_ns) = match timestamp(rest, received_ns, time) {
        Some(parsed) => {
            let after = &rest[parsed.length_bytes..];
            (
                after.strip_prefix(b" ").unwrap_or(after),
                Some(parsed.timestamp_ns),
            )
        }
        None => (rest, None),
    };
    let fields = if timestamp_ns.is_some() {
        host_and_tag(header)?
    } else {
        tag_only(header)?
    };
    Ok(Message {
        format: Format::Rfc3164,
        priority,
        timestamp_ns: timestamp_ns.flatten(),
        host: fields.host,
        app: fields.app,
        procid: fields.procid,
        msgid: None,
        structured_data: None,
        message: strip_bom(fields.message),
    })
}

/// A timestamp starting `rest`: RFC 3339 (rsyslog's forward format) when
/// it starts with a digit, BSD when with a letter.
fn timestamp(rest: &[u8], received_ns: u64, time: &mut TimeContext) -> Option<Parsed> {
    match rest.first()? {
        b'0'..=b'9' => {
            let parsed = parse_rfc3339(rest).ok()?;
            matches!(rest.get(parsed.length_bytes), None | Some(b' ')).then_some(parsed)
        }
        b'A'..=b'Z' | b'a'..=b'z' => parse_bsd(rest, received_ns, time),
        _ => None,
    }
}

/// What follows the timestamp, split.
#[derive(Clone, Copy, Debug, Default)]
struct Header<'a> {
    host: Option<&'a str>,
    app: Option<&'a str>,
    procid: Option<&'a str>,
    message: &'a [u8],
}

/// After a timestamp: a tag alone, or a host and maybe a tag.
fn host_and_tag(header: &[u8]) -> Result<Header<'_>, ParseError> {
    if let Some(tagged) = tag_at(header)? {
        return Ok(tagged);
    }
    let Some(word_length) = memchr::memchr(b' ', header) else {
        // A lone word: the message, not a host with an empty message.
        return Ok(Header {
            message: header,
            ..Header::default()
        });
    };
    if word_length == 0 || word_length > HOSTNAME_BYTES_MAX {
        return Ok(Header {
            message: header,
            ..Header::default()
        });
    }
    let host =
        std::str::from_utf8(&header[..word_length]).map_err(|_| ParseError::FieldNotUtf8 {
            field: Field::Hostname,
        })?;
    let after_host = &header[word_length + 1..];
    let tagged = tag_at(after_host)?.unwrap_or(Header {
        message: after_host,
        ..Header::default()
    });
    Ok(Header {
        host: Some(host),
        ..tagged
    })
}

/// Without a timestamp: a tag if the first word is one, no host.
fn tag_only(header: &[u8]) -> Result<Header<'_>, ParseError> {
    Ok(tag_at(header)?.unwrap_or(Header {
        message: header,
        ..Header::default()
    }))
}

/// The tag that starts `text`, if its first word is one: `NAME:`,
/// `NAME[PID]:` (then one space is skipped), or `NAME[PID]:` followed
/// directly by the message. `Ok(None)` when the word is no tag; an error
/// when it is one but not UTF-8.
fn tag_at(text: &[u8]) -> Result<Option<Header<'_>>, ParseError> {
    let word_length = memchr::memchr(b' ', text).unwrap_or(text.len());
    let word = &text[..word_length];
    let (tag, message_offset) = if let Some(tag) = word.strip_suffix(b":") {
        let space_bytes = usize::from(word_length < text.len());
        (tag, word_length + space_bytes)
    } else if let Some(close) = memchr::memmem::find(word, b"]:") {
        (&word[..=close], close + 2)
    } else {
        return Ok(None);
    };
    let Some((name, pid)) = split_tag(tag) else {
        return Ok(None);
    };
    let not_utf8 = |_| ParseError::FieldNotUtf8 { field: Field::Tag };
    let app = std::str::from_utf8(name).map_err(not_utf8)?;
    let procid = match pid {
        Some(pid) => Some(std::str::from_utf8(pid).map_err(not_utf8)?),
        None => None,
    };
    Ok(Some(Header {
        host: None,
        app: Some(app),
        procid,
        message: &text[message_offset..],
    }))
}

/// `NAME` or `NAME[PID]` into its parts; `None` unless NAME is 1 to
/// [`TAG_NAME_BYTES_MAX`] bytes and PID at most [`PROCID_BYTES_MAX`],
/// neither holding `[`, `]` or `:` (so an IPv6 address is never a tag). An
/// empty PID is no PID.
fn split_tag(tag: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let (name, pid) = match tag.strip_suffix(b"]") {
        Some(inner) => {
            let open = memchr::memchr(b'[', inner)?;
            (&inner[..open], Some(&inner[open + 1..]))
        }
        None => (tag, None),
    };
    let is_plain = |part: &[u8]| !part.iter().any(|byte| matches!(byte, b'[' | b']' | b':'));
    let name_fits = !name.is_empty() && name.len() <= TAG_NAME_BYTES_MAX && is_plain(name);
    let pid_fits = pid.is_none_or(|pid| pid.len() <= PROCID_BYTES_MAX && is_plain(pid));
    if !name_fits || !pid_fits {
        return None;
    }
    Some((name, pid.filter(|pid| !pid.is_empty())))
}

//! RFC 5424 (§6): the header, strictly, then the structured data and MSG.
//!
//! ```text
//! SYSLOG-MSG = HEADER SP STRUCTURED-DATA [SP MSG]
//! HEADER     = PRI VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID
//! ```

use super::structured_data::structured_data_length;
use super::timestamp::parse_rfc3339;
use super::{
    APP_NAME_BYTES_MAX, Field, Format, HOSTNAME_BYTES_MAX, MSGID_BYTES_MAX, Message,
    PROCID_BYTES_MAX, ParseError, Priority, StructuredDataProblem, TimeContext, TimestampProblem,
    parse_priority, strip_bom,
};

/// Parses an RFC 5424 message (see the module doc for what fails).
/// `received_ns` and `time` are unused, since an RFC 5424 timestamp carries
/// its offset; they keep the three parsers interchangeable.
pub fn parse_rfc5424<'a>(
    input: &'a [u8],
    _received_ns: u64,
    _time: &mut TimeContext,
) -> Result<Message<'a>, ParseError> {
    match input.first() {
        None => Err(ParseError::Empty),
        Some(b'<') => {
            let (priority, length_bytes) = parse_priority(input)?;
            if !input[length_bytes..].starts_with(b"1 ") {
                return Err(if length_bytes == input.len() {
                    ParseError::Empty
                } else {
                    ParseError::Version
                });
            }
            parse_after_priority(input, priority, length_bytes)
        }
        Some(_) => Err(ParseError::PriorityMissing),
    }
}

/// Parses the rest of a message whose `<PRI>` took `position` bytes and is
/// followed by `1 `.
pub(super) fn parse_after_priority(
    input: &[u8],
    priority: Priority,
    position: usize,
) -> Result<Message<'_>, ParseError> {
    debug_assert!(
        input[position..].starts_with(b"1 "),
        "version at {position}"
    );
    let mut cursor = Cursor {
        input,
        position: position + 2,
    };
    let timestamp_ns = cursor.timestamp()?;
    let host = cursor.field([Field::Hostname, Field::AppName], HOSTNAME_BYTES_MAX)?;
    let app = cursor.field([Field::AppName, Field::ProcId], APP_NAME_BYTES_MAX)?;
    let procid = cursor.field([Field::ProcId, Field::MsgId], PROCID_BYTES_MAX)?;
    let msgid = cursor.field([Field::MsgId, Field::StructuredData], MSGID_BYTES_MAX)?;
    let structured_data = cursor.structured_data()?;
    // The structured data ends at a space (then MSG) or at the end.
    let message = if cursor.position == input.len() {
        &input[input.len()..]
    } else {
        debug_assert_eq!(
            input[cursor.position], b' ',
            "after structured data at {}",
            cursor.position
        );
        strip_bom(&input[cursor.position + 1..])
    };
    Ok(Message {
        format: Format::Rfc5424,
        priority: Some(priority),
        timestamp_ns,
        host,
        app,
        procid,
        msgid,
        structured_data,
        message,
    })
}

/// The header fields still to read: `input[position..]`.
struct Cursor<'a> {
    input: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    /// TIMESTAMP and its space: `-`, or RFC 3339.
    fn timestamp(&mut self) -> Result<Option<u64>, ParseError> {
        let rest = &self.input[self.position..];
        if rest.starts_with(b"- ") {
            self.position += 2;
            return Ok(None);
        }
        if rest.is_empty() || rest == b"-" {
            return Err(ParseError::FieldMissing {
                field: Field::Timestamp,
            });
        }
        if rest[0] == b' ' {
            return Err(ParseError::FieldEmpty {
                field: Field::Timestamp,
            });
        }
        let parsed = parse_rfc3339(rest).map_err(|problem| ParseError::Timestamp { problem })?;
        match rest.get(parsed.length_bytes) {
            Some(b' ') => {
                self.position += parsed.length_bytes + 1;
                Ok(parsed.timestamp_ns)
            }
            None => Err(ParseError::FieldMissing {
                field: Field::Hostname,
            }),
            Some(_) => Err(ParseError::Timestamp {
                problem: TimestampProblem::Trailing,
            }),
        }
    }

    /// A header field of at most `bytes_max` printable US-ASCII bytes and
    /// the space after it; `None` for `-`. `[field, next]`: the field read
    /// and the one after it, missing when the message ends without the space.
    fn field(
        &mut self,
        [field, next]: [Field; 2],
        bytes_max: usize,
    ) -> Result<Option<&'a str>, ParseError> {
        let rest = &self.input[self.position..];
        let mut length_bytes = 0;
        loop {
            match rest.get(length_bytes) {
                Some(b' ') => break,
                Some(&byte) if !(33..=126).contains(&byte) => {
                    return Err(ParseError::FieldNotPrintable {
                        field,
                        byte,
                        offset: length_bytes,
                    });
                }
                Some(_) if length_bytes == bytes_max => {
                    return Err(ParseError::FieldTooLong { field, bytes_max });
                }
                Some(_) => length_bytes += 1,
                None if length_bytes == 0 => return Err(ParseError::FieldMissing { field }),
                None => return Err(ParseError::FieldMissing { field: next }),
            }
        }
        if length_bytes == 0 {
            return Err(ParseError::FieldEmpty { field });
        }
        self.position += length_bytes + 1;
        let value = &rest[..length_bytes];
        if value == b"-" {
            return Ok(None);
        }
        // Printable US-ASCII, so always UTF-8.
        std::str::from_utf8(value)
            .map(Some)
            .map_err(|_| ParseError::FieldNotPrintable {
                field,
                byte: 0,
                offset: 0,
            })
    }

    /// STRUCTURED-DATA, which must be followed by a space or the end.
    fn structured_data(&mut self) -> Result<Option<&'a [u8]>, ParseError> {
        let rest = &self.input[self.position..];
        let length_bytes = match rest.first() {
            None => {
                return Err(ParseError::FieldMissing {
                    field: Field::StructuredData,
                });
            }
            Some(b' ') => {
                return Err(ParseError::FieldEmpty {
                    field: Field::StructuredData,
                });
            }
            Some(b'-') => 1,
            Some(_) => structured_data_length(rest)?,
        };
        if !matches!(rest.get(length_bytes), None | Some(b' ')) {
            let problem = StructuredDataProblem::NotFollowedBySpace;
            return Err(ParseError::StructuredData {
                problem,
                offset: length_bytes,
            });
        }
        self.position += length_bytes;
        Ok((rest[0] != b'-').then_some(&rest[..length_bytes]))
    }
}

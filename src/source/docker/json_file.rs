//! Decoding one line of Docker's `json-file` log driver, in place.
//!
//! The driver writes one JSON object per line:
//!
//! ```text
//! {"log":"line 0\n","stream":"stdout","time":"2026-11-27T12:54:03.032065827Z"}
//! {"log":"first 16 KiB of a long line…","stream":"stdout","time":"…"}   (partial)
//! {"log":"…its end\n","stream":"stdout","time":"…"}
//! {"log":"x\n","stream":"stderr","attrs":{"tag":"web"},"time":"…"}      (--log-opt labels/env)
//! ```
//!
//! [`decode_in_place`] finds `log`, `stream` and `time` in any order, skips
//! any other member (`attrs`), and un-escapes the `log` string into the
//! bytes it was read from: an escape is never shorter than what it stands
//! for (`\n` is two bytes for one, `\uXXXX` six for at most three, a
//! surrogate pair twelve for four), so the write position never passes the
//! read position and nothing after the string is overwritten. The decoded
//! text is returned as a range of the same buffer: no allocation, no copy
//! beyond the un-escape itself.
//!
//! A `log` that does not end with `\n` is a partial message: Docker cuts a
//! line longer than 16 KiB into pieces and only the last ends with the
//! newline (and a container's last output may end without one). The
//! trailing `\n` is not part of the entry's text.
//!
//! Invariants: the returned range lies inside the input; the input is
//! changed only inside the `log` string's bytes. Limits: nesting of skipped
//! members is bounded by [`SKIP_DEPTH_MAX`]. Bad input (not JSON, a
//! missing `log`, a bad escape, a `time` that is not Docker's RFC 3339 UTC
//! form) is an error naming the byte offset, never a panic. Lone surrogates
//! decode to U+FFFD, as Go's encoder (which wrote them) does.

use std::ops::Range;

/// Nesting depth of a skipped member's value (`attrs` is one level).
pub const SKIP_DEPTH_MAX: usize = 32;

const NANOSECONDS_PER_SECOND: i64 = 1_000_000_000;
const SECONDS_PER_DAY: i64 = 86_400;
const REPLACEMENT_CHARACTER: char = '\u{FFFD}';

/// The output stream a line was written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    /// The name Docker gives it, used as the `stream` label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// One decoded line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonFileLine {
    /// The un-escaped `log` text in the decoded buffer, without its
    /// trailing newline.
    pub log: Range<usize>,
    pub stream: LogStream,
    /// `time`, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// The `log` did not end with a newline: more of this line follows.
    pub partial: bool,
}

/// Whether reading a string writes its decoded text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    Check,
    InPlace,
}

/// Why a line could not be decoded. Offsets count from the line's start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a json-file line: expected {expected} at byte {offset}")]
    Syntax {
        expected: &'static str,
        offset: usize,
    },
    #[error("bad escape in a string at byte {offset}")]
    Escape { offset: usize },
    #[error("member \"{member}\" is missing")]
    Missing { member: &'static str },
    #[error("member \"{member}\" appears twice (second at byte {offset})")]
    Duplicate { member: &'static str, offset: usize },
    #[error("stream is neither \"stdout\" nor \"stderr\" (at byte {offset})")]
    Stream { offset: usize },
    #[error("time is not an RFC 3339 UTC time after 1970 (at byte {offset})")]
    Time { offset: usize },
    #[error("members nest deeper than {SKIP_DEPTH_MAX} at byte {offset}")]
    TooDeep { offset: usize },
}

/// Decodes one line (without its `\n`), un-escaping `log` in place.
pub fn decode_in_place(line: &mut [u8]) -> Result<JsonFileLine, DecodeError> {
    let mut cursor = Cursor { at: 0 };
    cursor.skip_space(line);
    cursor.expect(line, b'{', "'{'")?;
    let mut log: Option<Range<usize>> = None;
    let mut stream: Option<LogStream> = None;
    let mut time_ns: Option<u64> = None;
    cursor.skip_space(line);
    if cursor.peek(line) == Some(b'}') {
        return Err(DecodeError::Missing { member: "log" });
    }
    loop {
        cursor.skip_space(line);
        let key_offset = cursor.at;
        let key = cursor.raw_string(line)?;
        cursor.skip_space(line);
        cursor.expect(line, b':', "':'")?;
        cursor.skip_space(line);
        let value_offset = cursor.at;
        match &line[key.clone()] {
            b"log" => {
                if log.is_some() {
                    return Err(duplicate("log", key_offset));
                }
                // Checked only, for now: the line is changed once all of
                // it decodes, so that a line that does not stays as read.
                let at = cursor.at;
                cursor.unescape_string(line, Write::Check)?;
                log = Some(at..at);
            }
            b"stream" => {
                if stream.is_some() {
                    return Err(duplicate("stream", key_offset));
                }
                let value = cursor.raw_string(line)?;
                stream = Some(match &line[value] {
                    b"stdout" => LogStream::Stdout,
                    b"stderr" => LogStream::Stderr,
                    _ => {
                        return Err(DecodeError::Stream {
                            offset: value_offset,
                        });
                    }
                });
            }
            b"time" => {
                if time_ns.is_some() {
                    return Err(duplicate("time", key_offset));
                }
                let value = cursor.raw_string(line)?;
                time_ns = Some(parse_time(&line[value]).ok_or(DecodeError::Time {
                    offset: value_offset,
                })?);
            }
            _ => cursor.skip_value(line, 0)?,
        }
        cursor.skip_space(line);
        match cursor.next(line) {
            Some(b',') => continue,
            Some(b'}') => break,
            _ => {
                return Err(DecodeError::Syntax {
                    expected: "',' or '}'",
                    offset: cursor.at.saturating_sub(1),
                });
            }
        }
    }
    cursor.skip_space(line);
    if cursor.at != line.len() {
        return Err(DecodeError::Syntax {
            expected: "the end of the line",
            offset: cursor.at,
        });
    }
    let log_at = log.ok_or(DecodeError::Missing { member: "log" })?.start;
    let stream = stream.ok_or(DecodeError::Missing { member: "stream" })?;
    let time_ns = time_ns.ok_or(DecodeError::Missing { member: "time" })?;
    // The whole line decodes: only now is it changed.
    let mut log = Cursor { at: log_at }
        .unescape_string(line, Write::InPlace)
        .expect("the string was checked");
    let partial = !(log.end > log.start && line[log.end - 1] == b'\n');
    if !partial {
        log.end -= 1;
    }
    Ok(JsonFileLine {
        log,
        stream,
        time_ns,
        partial,
    })
}

fn duplicate(member: &'static str, offset: usize) -> DecodeError {
    DecodeError::Duplicate { member, offset }
}

/// A read position in the line.
struct Cursor {
    at: usize,
}

impl Cursor {
    fn peek(&self, line: &[u8]) -> Option<u8> {
        line.get(self.at).copied()
    }

    fn next(&mut self, line: &[u8]) -> Option<u8> {
        let byte = self.peek(line)?;
        self.at += 1;
        Some(byte)
    }

    fn skip_space(&mut self, line: &[u8]) {
        while matches!(self.peek(line), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, line: &[u8], byte: u8, expected: &'static str) -> Result<(), DecodeError> {
        if self.peek(line) == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(DecodeError::Syntax {
                expected,
                offset: self.at,
            })
        }
    }

    /// A string whose escapes are skipped, not decoded: the range between
    /// its quotes. For keys and the short ASCII values Docker writes.
    fn raw_string(&mut self, line: &[u8]) -> Result<Range<usize>, DecodeError> {
        self.expect(line, b'"', "'\"'")?;
        let start = self.at;
        loop {
            let Some(found) = memchr::memchr2(b'"', b'\\', &line[self.at..]) else {
                return Err(DecodeError::Syntax {
                    expected: "the end of a string",
                    offset: line.len(),
                });
            };
            self.at += found;
            if line[self.at] == b'"' {
                self.at += 1;
                return Ok(start..self.at - 1);
            }
            // A backslash: the escaped byte cannot end the string.
            if self.at + 1 >= line.len() {
                return Err(DecodeError::Escape { offset: self.at });
            }
            self.at += 2;
        }
    }

    /// A string un-escaped into its own bytes: the range of the result.
    /// Reads the string at `self.at`, un-escaping it into its own bytes
    /// (`Write::InPlace`) or only checking that it would decode
    /// (`Write::Check`, which changes nothing and fails where `InPlace`
    /// would); returns where the text is (its length is right only when
    /// written).
    fn unescape_string(
        &mut self,
        line: &mut [u8],
        mode: Write,
    ) -> Result<Range<usize>, DecodeError> {
        self.expect(line, b'"', "'\"'")?;
        let start = self.at;
        let mut write = start;
        loop {
            let Some(found) = memchr::memchr2(b'"', b'\\', &line[self.at..]) else {
                return Err(DecodeError::Syntax {
                    expected: "the end of a string",
                    offset: line.len(),
                });
            };
            debug_assert!(write <= self.at, "write {write} read {}", self.at);
            if mode == Write::InPlace {
                line.copy_within(self.at..self.at + found, write);
            }
            write += found;
            self.at += found;
            if line[self.at] == b'"' {
                self.at += 1;
                return Ok(start..write);
            }
            write = self.unescape_one(line, write, mode)?;
        }
    }

    /// Decodes the escape at `self.at` into `line[write..]` (when
    /// writing); returns the new write position.
    fn unescape_one(
        &mut self,
        line: &mut [u8],
        write: usize,
        mode: Write,
    ) -> Result<usize, DecodeError> {
        let offset = self.at;
        let escaped = *line
            .get(self.at + 1)
            .ok_or(DecodeError::Escape { offset })?;
        self.at += 2;
        let byte = match escaped {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let character = self.unicode_escape(line, offset)?;
                let mut encoded = [0u8; 4];
                let text = character.encode_utf8(&mut encoded);
                debug_assert!(
                    write + text.len() <= self.at,
                    "write {write} read {}",
                    self.at
                );
                if mode == Write::InPlace {
                    line[write..write + text.len()].copy_from_slice(text.as_bytes());
                }
                return Ok(write + text.len());
            }
            _ => return Err(DecodeError::Escape { offset }),
        };
        if mode == Write::InPlace {
            line[write] = byte;
        }
        Ok(write + 1)
    }

    /// The character of a `\uXXXX` escape whose four digits start at
    /// `self.at`, with its low surrogate if it is a high one.
    fn unicode_escape(&mut self, line: &[u8], offset: usize) -> Result<char, DecodeError> {
        let high = self.hex4(line).ok_or(DecodeError::Escape { offset })?;
        if !(0xD800..0xDC00).contains(&high) {
            return Ok(char::from_u32(high).unwrap_or(REPLACEMENT_CHARACTER));
        }
        // A high surrogate pairs only with a `\u` low one right after it.
        if line.get(self.at..self.at + 2) == Some(b"\\u") {
            let saved = self.at;
            self.at += 2;
            if let Some(low) = self.hex4(line)
                && (0xDC00..0xE000).contains(&low)
            {
                let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                return Ok(char::from_u32(code).unwrap_or(REPLACEMENT_CHARACTER));
            }
            self.at = saved;
        }
        Ok(REPLACEMENT_CHARACTER)
    }

    fn hex4(&mut self, line: &[u8]) -> Option<u32> {
        let digits = line.get(self.at..self.at + 4)?;
        let mut value = 0u32;
        for &digit in digits {
            value = value * 16 + char::from(digit).to_digit(16)?;
        }
        self.at += 4;
        Some(value)
    }

    /// Skips one JSON value of a member the decoder does not use.
    fn skip_value(&mut self, line: &[u8], depth: usize) -> Result<(), DecodeError> {
        if depth >= SKIP_DEPTH_MAX {
            return Err(DecodeError::TooDeep { offset: self.at });
        }
        match self.peek(line) {
            Some(b'"') => self.raw_string(line).map(|_| ()),
            Some(open @ (b'{' | b'[')) => self.skip_container(line, open, depth),
            Some(b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
                let start = self.at;
                while matches!(
                    self.peek(line),
                    Some(b'-' | b'+' | b'.' | b'0'..=b'9' | b'a'..=b'z' | b'E')
                ) {
                    self.at += 1;
                }
                let word = &line[start..self.at];
                let is_number = word[0] == b'-' || word[0].is_ascii_digit();
                if is_number || matches!(word, b"true" | b"false" | b"null") {
                    Ok(())
                } else {
                    Err(DecodeError::Syntax {
                        expected: "a value",
                        offset: start,
                    })
                }
            }
            _ => Err(DecodeError::Syntax {
                expected: "a value",
                offset: self.at,
            }),
        }
    }

    fn skip_container(&mut self, line: &[u8], open: u8, depth: usize) -> Result<(), DecodeError> {
        let close = if open == b'{' { b'}' } else { b']' };
        self.at += 1;
        self.skip_space(line);
        if self.peek(line) == Some(close) {
            self.at += 1;
            return Ok(());
        }
        loop {
            self.skip_space(line);
            if open == b'{' {
                self.raw_string(line)?;
                self.skip_space(line);
                self.expect(line, b':', "':'")?;
                self.skip_space(line);
            }
            self.skip_value(line, depth + 1)?;
            self.skip_space(line);
            match self.next(line) {
                Some(b',') => continue,
                Some(byte) if byte == close => return Ok(()),
                _ => {
                    return Err(DecodeError::Syntax {
                        expected: "',' or the end of a member",
                        offset: self.at.saturating_sub(1),
                    });
                }
            }
        }
    }
}

/// Docker's `time`: `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (Go's RFC3339Nano,
/// always UTC), or a `+hh:mm`/`-hh:mm` offset for other writers. None for
/// anything else or a time before 1970.
pub fn parse_time(text: &[u8]) -> Option<u64> {
    let number = |range: Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        let mut value = 0i64;
        for &digit in digits {
            if !digit.is_ascii_digit() {
                return None;
            }
            value = value * 10 + i64::from(digit - b'0');
        }
        Some(value)
    };
    let separators_ok = text.get(4) == Some(&b'-')
        && text.get(7) == Some(&b'-')
        && matches!(text.get(10), Some(b'T' | b't' | b' '))
        && text.get(13) == Some(&b':')
        && text.get(16) == Some(&b':');
    if !separators_ok {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let day_ok = (1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month);
    if !day_ok || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut at = 19;
    let mut nanoseconds = 0i64;
    if text.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while text.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 9 {
                nanoseconds = nanoseconds * 10 + i64::from(text[at] - b'0');
            }
            at += 1;
        }
        let digits = at - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..9 {
            nanoseconds *= 10;
        }
    }
    let offset_seconds = match text.get(at)? {
        b'Z' | b'z' if at + 1 == text.len() => 0,
        sign @ (b'+' | b'-') if at + 6 == text.len() && text[at + 3] == b':' => {
            let (hours, minutes) = (number(at + 1..at + 3)?, number(at + 4..at + 6)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let magnitude = hours * 3_600 + minutes * 60;
            if *sign == b'+' { magnitude } else { -magnitude }
        }
        _ => return None,
    };
    let seconds =
        days_from_civil(year, month, day) * SECONDS_PER_DAY + hour * 3_600 + minute * 60 + second
            - offset_seconds;
    let total = seconds
        .checked_mul(NANOSECONDS_PER_SECOND)?
        .checked_add(nanoseconds)?;
    u64::try_from(total).ok()
}

/// Days since 1970-01-01 of a civil date (Hinnant's `days_from_civil`,
/// <https://howardhinnant.github.io/date_algorithms.html>).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests;

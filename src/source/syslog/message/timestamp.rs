//! Timestamps: RFC 3339 (RFC 5424, and rsyslog's forward format inside RFC
//! 3164), the BSD `Mmm dd hh:mm:ss` of RFC 3164, civil-to-epoch arithmetic,
//! and the [`TimeContext`] that caches what a zone says about the hours
//! messages fall in.
//!
//! Civil dates become days since the epoch by Hinnant's `days_from_civil`
//! (<https://howardhinnant.github.io/date_algorithms.html>), not by jiff:
//! an RFC 3339 timestamp carries its offset and needs no zone at all. jiff
//! is asked only on a cache miss of [`TimeContext`], which holds one UTC
//! hour (for the receive time) and one local hour (for timestamps without
//! an offset): in steady state every message of a busy hour hits.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};

use super::TimestampProblem;

const NANOSECONDS_PER_SECOND: u64 = 1_000_000_000;
const SECONDS_PER_HOUR: i64 = 3_600;
const SECONDS_PER_DAY: i64 = 86_400;

/// Days a date may lie ahead of the receive date before a year-less RFC
/// 3164 date is taken to belong to the year before (a December message read
/// in January). Clocks run a little fast; a month ahead is not a clock.
const YEAR_INFERENCE_AHEAD_DAYS_MAX: i64 = 31;

/// Days a year-less date may lie behind the receive date before it is taken
/// to belong to the year after (a sender whose clock already passed New
/// Year while ours did not): the complement of the rule above.
const YEAR_INFERENCE_BEHIND_DAYS_MAX: i64 = 365 - YEAR_INFERENCE_AHEAD_DAYS_MAX;

/// Fraction digits read at most: nanoseconds.
const FRACTION_DIGITS_MAX: usize = 9;

/// A date and time as written in a message, before any zone applies.
/// Invariant (checked by [`CivilTime::new`]): every field in range, the day
/// valid for its month and year.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CivilTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanosecond: u32,
}

impl CivilTime {
    /// Validates the fields; the error names the first one out of range.
    /// Leap seconds (second 60) are refused: RFC 5424 forbids them.
    fn new(
        (year, month, day): (i64, u32, u32),
        (hour, minute, second): (u32, u32, u32),
        nanosecond: u32,
    ) -> Result<CivilTime, TimestampProblem> {
        if !(1..=12).contains(&month) {
            return Err(TimestampProblem::Month);
        }
        if day == 0 || day > days_in_month(year, month) {
            return Err(TimestampProblem::Day);
        }
        if hour > 23 {
            return Err(TimestampProblem::Hour);
        }
        if minute > 59 {
            return Err(TimestampProblem::Minute);
        }
        if second > 59 {
            return Err(TimestampProblem::Second);
        }
        debug_assert!(
            u64::from(nanosecond) < NANOSECONDS_PER_SECOND,
            "{nanosecond}"
        );
        Ok(CivilTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            nanosecond,
        })
    }

    /// Seconds since the epoch of this civil time read as UTC.
    fn seconds_as_utc(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * SECONDS_PER_DAY
            + i64::from(self.hour) * SECONDS_PER_HOUR
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }

    /// jiff's civil date-time at `minute:second.nanosecond` of this hour;
    /// `None` outside jiff's years (-9999..=9999).
    fn jiff_at(&self, minute: u32, second: u32, nanosecond: u32) -> Option<DateTime> {
        let year = i16::try_from(self.year).ok()?;
        // Every narrowing below holds by the invariant of `CivilTime`.
        DateTime::new(
            year,
            self.month as i8,
            self.day as i8,
            self.hour as i8,
            minute as i8,
            second as i8,
            nanosecond as i32,
        )
        .ok()
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's
/// `days_from_civil`). A day past the month's end counts on into the next
/// month, which the year inference relies on for 29 February.
pub(super) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    debug_assert!((1..=12).contains(&month), "month {month}");
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date of a day since 1970-01-01 (Hinnant's
/// `civil_from_days`), as (year, month, day).
pub(super) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Days in a month of a year; 0 for a month outside 1..=12.
pub(super) fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Nanoseconds since the epoch, or `None` before 1970 or past 2554 (what a
/// `u64` of nanoseconds holds).
fn epoch_ns(utc_seconds: i64, nanosecond: u32) -> Option<u64> {
    let seconds = u64::try_from(utc_seconds).ok()?;
    seconds
        .checked_mul(NANOSECONDS_PER_SECOND)?
        .checked_add(u64::from(nanosecond))
}

/// A zone's offset over one hour, when it is the same for the whole hour.
#[derive(Clone, Copy, Debug)]
struct HourOffset {
    /// Hours since the epoch (UTC or local, as the cache says); `i64::MIN`
    /// when the entry is empty (no instant of a `u64` receive time or of a
    /// 4-digit year falls in it).
    hour: i64,
    offset_seconds: i32,
}

const HOUR_OFFSET_EMPTY: HourOffset = HourOffset {
    hour: i64::MIN,
    offset_seconds: 0,
};

/// The time zone for timestamps that carry no offset (RFC 3164), and what
/// it said about the last hours seen.
///
/// The caches hold one hour each: the UTC hour of the last receive time
/// (for the receive date, which gives a year-less date its year) and the
/// local hour of the last offset-less timestamp. An hour is cached only
/// when the zone's offset is the same at its first and last second, so a
/// DST transition hour is asked of jiff per message (unambiguous instants
/// exactly; a repeated local hour takes the earlier instant, a skipped one
/// the later offset: jiff's "compatible" choice). A zone whose offset
/// changed twice in one hour would be cached wrongly; none has.
///
/// Allocates nothing after construction; one context belongs to one thread
/// (the methods that parse take `&mut`).
#[derive(Clone, Debug)]
pub struct TimeContext {
    zone: TimeZone,
    /// UTC hour of the last receive time and the zone's offset then.
    receive_hour: HourOffset,
    /// Local hour of the last offset-less timestamp and the zone's offset then.
    local_hour: HourOffset,
}

/// A configured time zone name that the time zone database does not know.
#[derive(Debug, thiserror::Error)]
#[error("syslog time zone {name:?}: not found in the time zone database")]
pub struct TimeZoneError {
    pub name: String,
    #[source]
    pub source: jiff::Error,
}

impl TimeContext {
    /// A context for `zone`.
    pub fn new(zone: TimeZone) -> Self {
        TimeContext {
            zone,
            receive_hour: HOUR_OFFSET_EMPTY,
            local_hour: HOUR_OFFSET_EMPTY,
        }
    }

    /// A context for UTC.
    pub fn utc() -> Self {
        TimeContext::new(TimeZone::UTC)
    }

    /// A context for the host's zone (`TZ`, then `/etc/localtime`), UTC when
    /// the host names none jiff can read.
    pub fn system() -> Self {
        TimeContext::new(TimeZone::try_system().unwrap_or(TimeZone::UTC))
    }

    /// A context for an IANA zone name such as `Europe/Berlin`, looked up
    /// once in the system's time zone database.
    pub fn named(name: &str) -> Result<Self, TimeZoneError> {
        match TimeZone::get(name) {
            Ok(zone) => Ok(TimeContext::new(zone)),
            Err(source) => Err(TimeZoneError {
                name: name.to_owned(),
                source,
            }),
        }
    }

    /// The zone of this context.
    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }

    /// The zone's offset at an instant, from the cache when the instant
    /// falls in the cached UTC hour.
    fn offset_at(&mut self, utc_seconds: i64) -> i32 {
        let hour = utc_seconds.div_euclid(SECONDS_PER_HOUR);
        if hour == self.receive_hour.hour {
            return self.receive_hour.offset_seconds;
        }
        let offset_of = |seconds: i64| {
            Timestamp::from_second(seconds)
                .map_or(0, |instant| self.zone.to_offset(instant).seconds())
        };
        let first = offset_of(hour * SECONDS_PER_HOUR);
        let last = offset_of(hour * SECONDS_PER_HOUR + SECONDS_PER_HOUR - 1);
        if first != last {
            return offset_of(utc_seconds);
        }
        self.receive_hour = HourOffset {
            hour,
            offset_seconds: first,
        };
        first
    }

    /// The civil date of a receive time in this zone.
    fn receive_date(&mut self, received_ns: u64) -> (i64, u32, u32) {
        // A u64 of nanoseconds is at most 1.8e10 seconds: no overflow.
        let utc_seconds = (received_ns / NANOSECONDS_PER_SECOND) as i64;
        let local_seconds = utc_seconds + i64::from(self.offset_at(utc_seconds));
        civil_from_days(local_seconds.div_euclid(SECONDS_PER_DAY))
    }

    /// The year of a year-less `month`/`day`: the receive year, or the one
    /// before when the date would lie more than a month ahead of the receive
    /// date, or the one after when it would lie eleven months behind.
    fn infer_year(&mut self, month: u32, day: u32, received_ns: u64) -> i64 {
        let (year, receive_month, receive_day) = self.receive_date(received_ns);
        let ahead_days =
            days_from_civil(year, month, day) - days_from_civil(year, receive_month, receive_day);
        if ahead_days > YEAR_INFERENCE_AHEAD_DAYS_MAX {
            year - 1
        } else if ahead_days < -YEAR_INFERENCE_BEHIND_DAYS_MAX {
            year + 1
        } else {
            year
        }
    }

    /// Seconds since the epoch of a civil time in this zone; `None` outside
    /// jiff's years.
    fn local_to_utc_seconds(&mut self, civil: &CivilTime) -> Option<i64> {
        let local_seconds = civil.seconds_as_utc();
        let hour = local_seconds.div_euclid(SECONDS_PER_HOUR);
        if hour != self.local_hour.hour {
            let first = self
                .zone
                .to_ambiguous_timestamp(civil.jiff_at(0, 0, 0)?)
                .offset();
            let last = self
                .zone
                .to_ambiguous_timestamp(civil.jiff_at(59, 59, 999_999_999)?)
                .offset();
            match (first, last) {
                (
                    AmbiguousOffset::Unambiguous { offset: first },
                    AmbiguousOffset::Unambiguous { offset: last },
                ) if first == last => {
                    self.local_hour = HourOffset {
                        hour,
                        offset_seconds: first.seconds(),
                    };
                }
                _ => {
                    let exact = civil.jiff_at(civil.minute, civil.second, civil.nanosecond)?;
                    let instant = self.zone.to_ambiguous_timestamp(exact).compatible().ok()?;
                    return Some(instant.as_second());
                }
            }
        }
        Some(local_seconds - i64::from(self.local_hour.offset_seconds))
    }
}

/// A timestamp read from the start of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Parsed {
    /// Nanoseconds since the epoch; `None` when the timestamp is well formed
    /// but outside what a `u64` of nanoseconds since 1970 holds.
    pub timestamp_ns: Option<u64>,
    /// Bytes of the input the timestamp took.
    pub length_bytes: usize,
}

/// The value of `count` ASCII digits at `input[at..]`.
#[inline]
fn digits(input: &[u8], at: usize, count: usize) -> Option<u32> {
    let field = input.get(at..at + count)?;
    let mut value = 0u32;
    for &byte in field {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u32::from(byte - b'0');
    }
    Some(value)
}

#[inline]
fn byte_is(input: &[u8], at: usize, expected: u8) -> bool {
    input.get(at) == Some(&expected)
}

/// A fraction of a second at `input[*position..]` when one starts there
/// (`.` and 1 to 9 digits), as nanoseconds; moves `position` past it.
fn fraction(input: &[u8], position: &mut usize) -> Result<u32, TimestampProblem> {
    if !byte_is(input, *position, b'.') {
        return Ok(0);
    }
    let start = *position + 1;
    let digit_count = input
        .get(start..)
        .unwrap_or_default()
        .iter()
        .take_while(|byte| byte.is_ascii_digit())
        .count();
    if digit_count == 0 || digit_count > FRACTION_DIGITS_MAX {
        return Err(TimestampProblem::Fraction);
    }
    let value = digits(input, start, digit_count).ok_or(TimestampProblem::Fraction)?;
    *position = start + digit_count;
    Ok(value * 10u32.pow((FRACTION_DIGITS_MAX - digit_count) as u32))
}

/// A numeric offset `±hh:mm` (or `±hhmm` when `colon` is false) at
/// `input[at..]`, in seconds east of UTC, and its length.
fn numeric_offset(input: &[u8], at: usize, colon: bool) -> Option<(i32, usize)> {
    let sign = match input.get(at)? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let hours = digits(input, at + 1, 2)?;
    let (minutes_at, length_bytes) = if colon { (at + 4, 6) } else { (at + 3, 5) };
    if colon && !byte_is(input, at + 3, b':') {
        return None;
    }
    let minutes = digits(input, minutes_at, 2)?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some((sign * (hours * 3_600 + minutes * 60) as i32, length_bytes))
}

/// An RFC 3339 timestamp at the start of `input`:
/// `YYYY-MM-DDThh:mm:ss[.f{1,9}](Z|±hh:mm)`, upper-case `T` and `Z` as RFC
/// 5424 requires. What follows it is the caller's to check.
pub(super) fn parse_rfc3339(input: &[u8]) -> Result<Parsed, TimestampProblem> {
    let shape = TimestampProblem::Shape;
    let year = digits(input, 0, 4).ok_or(shape)?;
    let month = digits(input, 5, 2).ok_or(shape)?;
    let day = digits(input, 8, 2).ok_or(shape)?;
    let hour = digits(input, 11, 2).ok_or(shape)?;
    let minute = digits(input, 14, 2).ok_or(shape)?;
    let second = digits(input, 17, 2).ok_or(shape)?;
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if !separators
        .iter()
        .all(|&(at, expected)| byte_is(input, at, expected))
    {
        return Err(shape);
    }
    let mut position = 19;
    let nanosecond = fraction(input, &mut position)?;
    let offset_seconds = if byte_is(input, position, b'Z') {
        position += 1;
        0
    } else {
        let (offset_seconds, length_bytes) =
            numeric_offset(input, position, true).ok_or(TimestampProblem::Offset)?;
        position += length_bytes;
        offset_seconds
    };
    let civil = CivilTime::new(
        (i64::from(year), month, day),
        (hour, minute, second),
        nanosecond,
    )?;
    let utc_seconds = civil.seconds_as_utc() - i64::from(offset_seconds);
    Ok(Parsed {
        timestamp_ns: epoch_ns(utc_seconds, civil.nanosecond),
        length_bytes: position,
    })
}

/// The month of a three-letter English abbreviation, any case.
fn month_number(name: &[u8]) -> Option<u32> {
    const NAMES: [&[u8; 3]; 12] = [
        b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov",
        b"dec",
    ];
    let lower = [
        name.first()? | 0x20,
        name.get(1)? | 0x20,
        name.get(2)? | 0x20,
    ];
    let index = NAMES.iter().position(|candidate| **candidate == lower)?;
    Some(index as u32 + 1)
}

/// What a zone written after a BSD time says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WrittenZone {
    /// A fixed offset, in seconds east of UTC.
    Offset(i32),
    /// An abbreviation such as `CST` that names no offset unambiguously:
    /// the context's zone applies.
    Abbreviation,
}

/// Zone abbreviations after a BSD time with the offset each names, in
/// minutes east of UTC; `None` for one that names several (`CST` is
/// US Central and China, `IST` India, Ireland and Israel, `BST` British
/// summer and Bangladesh, `AST` Atlantic and Arabia): the context's zone
/// applies to those. A list, not a shape: an upper-case host name of a
/// few letters (`NAS`, `FW`) comes in the same place and must stay the
/// host.
const ZONE_ABBREVIATIONS: &[(&[u8], Option<i32>)] = &[
    (b"UT", Some(0)),
    (b"WET", Some(0)),
    (b"WEST", Some(60)),
    (b"CET", Some(60)),
    (b"CEST", Some(120)),
    (b"MET", Some(60)),
    (b"MEST", Some(120)),
    (b"EET", Some(120)),
    (b"EEST", Some(180)),
    (b"MSK", Some(180)),
    (b"EST", Some(-300)),
    (b"EDT", Some(-240)),
    (b"CDT", Some(-300)),
    (b"MST", Some(-420)),
    (b"MDT", Some(-360)),
    (b"PST", Some(-480)),
    (b"PDT", Some(-420)),
    (b"AKST", Some(-540)),
    (b"AKDT", Some(-480)),
    (b"HST", Some(-600)),
    (b"NST", Some(-210)),
    (b"NDT", Some(-150)),
    (b"JST", Some(540)),
    (b"KST", Some(540)),
    (b"HKT", Some(480)),
    (b"SGT", Some(480)),
    (b"AWST", Some(480)),
    (b"ACST", Some(570)),
    (b"ACDT", Some(630)),
    (b"AEST", Some(600)),
    (b"AEDT", Some(660)),
    (b"NZST", Some(720)),
    (b"NZDT", Some(780)),
    (b"CST", None),
    (b"IST", None),
    (b"BST", None),
    (b"AST", None),
    (b"ADT", None),
];

/// A zone token after a BSD time: `UTC`, `GMT`, `Z`, `±hhmm`, `±hh:mm`, or
/// one of [`ZONE_ABBREVIATIONS`] when more of the message follows it (a
/// lone last word is more likely the message than a zone).
fn written_zone(token: &[u8], more_follows: bool) -> Option<WrittenZone> {
    match token {
        b"UTC" | b"GMT" | b"Z" => return Some(WrittenZone::Offset(0)),
        [b'+' | b'-', ..] => {
            let colon = token.len() == 6;
            return match numeric_offset(token, 0, colon) {
                Some((offset_seconds, length_bytes)) if length_bytes == token.len() => {
                    Some(WrittenZone::Offset(offset_seconds))
                }
                _ => None,
            };
        }
        _ => {}
    }
    if !more_follows {
        return None;
    }
    let (_, minutes) = ZONE_ABBREVIATIONS
        .iter()
        .find(|(abbreviation, _)| *abbreviation == token)?;
    Some(match minutes {
        Some(minutes) => WrittenZone::Offset(minutes * 60),
        None => WrittenZone::Abbreviation,
    })
}

/// The fields of a BSD timestamp, before validation.
#[derive(Clone, Copy, Debug, Default)]
struct BsdFields {
    month: u32,
    day: u32,
    year: Option<u32>,
    hour: u32,
    minute: u32,
    second: u32,
    nanosecond: u32,
    zone: Option<WrittenZone>,
}

/// Reads `Mmm dd [yyyy ]hh:mm:ss[.f]` and then, in any order, a year and a
/// zone, each at most once; `None` unless the timestamp ends at a space or
/// at the end of the input. Returns the fields and the bytes taken.
fn bsd_fields(input: &[u8]) -> Option<(BsdFields, usize)> {
    let mut fields = BsdFields {
        month: month_number(input)?,
        ..BsdFields::default()
    };
    if !byte_is(input, 3, b' ') {
        return None;
    }
    // The day is space-padded ("Nov  7") by the RFC, but some senders write
    // "Nov 7" or "Nov 07".
    let mut position = if byte_is(input, 4, b' ') { 5 } else { 4 };
    let day_digits = if digits(input, position + 1, 1).is_some() {
        2
    } else {
        1
    };
    fields.day = digits(input, position, day_digits)?;
    position += day_digits;
    if !byte_is(input, position, b' ') {
        return None;
    }
    position += 1;
    if let Some(year) = digits(input, position, 4).filter(|_| byte_is(input, position + 4, b' ')) {
        fields.year = Some(year);
        position += 5;
    }
    fields.hour = digits(input, position, 2)?;
    fields.minute = digits(input, position + 3, 2)?;
    fields.second = digits(input, position + 6, 2)?;
    if !byte_is(input, position + 2, b':') || !byte_is(input, position + 5, b':') {
        return None;
    }
    position += 8;
    fields.nanosecond = fraction(input, &mut position).ok()?;
    position = bsd_trailing_tokens(input, position, &mut fields);
    (position == input.len() || byte_is(input, position, b' ')).then_some((fields, position))
}

/// Takes a year and a zone after a BSD time (`12:00:00 2026`, `12:00:00
/// UTC`, `12:00:00 CET 2026`), each at most once; returns the position
/// after the last one taken.
fn bsd_trailing_tokens(input: &[u8], mut position: usize, fields: &mut BsdFields) -> usize {
    // At most two tokens: a year and a zone.
    for _ in 0..2 {
        if !byte_is(input, position, b' ') {
            break;
        }
        let start = position + 1;
        let rest = &input[start..];
        let token_length = memchr::memchr(b' ', rest).unwrap_or(rest.len());
        let token = &rest[..token_length];
        let more_follows = token_length < rest.len();
        let year = digits(token, 0, 4).filter(|_| fields.year.is_none() && token.len() == 4);
        if year.is_some() {
            fields.year = year;
            position = start + token_length;
            continue;
        }
        match written_zone(token, more_follows) {
            Some(zone) if fields.zone.is_none() => {
                fields.zone = Some(zone);
                position = start + token_length;
            }
            _ => break,
        }
    }
    position
}

/// A BSD timestamp (RFC 3164 §4.1.2, with the variants senders write: see
/// [`bsd_fields`]) at the start of `input`; `None` when there is none or it
/// names an impossible date or time. A missing year is inferred from the
/// receive time, a missing zone is the context's.
pub(super) fn parse_bsd(input: &[u8], received_ns: u64, time: &mut TimeContext) -> Option<Parsed> {
    let (fields, length_bytes) = bsd_fields(input)?;
    let year = match fields.year {
        Some(year) => i64::from(year),
        None => time.infer_year(fields.month, fields.day, received_ns),
    };
    let civil = CivilTime::new(
        (year, fields.month, fields.day),
        (fields.hour, fields.minute, fields.second),
        fields.nanosecond,
    )
    .ok()?;
    let utc_seconds = match fields.zone {
        Some(WrittenZone::Offset(offset_seconds)) => {
            Some(civil.seconds_as_utc() - i64::from(offset_seconds))
        }
        Some(WrittenZone::Abbreviation) | None => time.local_to_utc_seconds(&civil),
    };
    let timestamp_ns = utc_seconds.and_then(|seconds| epoch_ns(seconds, civil.nanosecond));
    Some(Parsed {
        timestamp_ns,
        length_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the civil arithmetic agrees with jiff on every day of 1600..2600.
    /// Method: walk day numbers both ways and compare with jiff's dates.
    #[test]
    fn civil_days_round_trip_and_match_jiff() {
        let first = days_from_civil(1600, 1, 1);
        let last = days_from_civil(2600, 12, 31);
        let mut date = jiff::civil::date(1600, 1, 1);
        for days in first..=last {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(
                (year, month, day),
                (
                    i64::from(date.year()),
                    date.month() as u32,
                    date.day() as u32
                )
            );
            assert_eq!(
                days_from_civil(year, month, day),
                days,
                "{year}-{month}-{day}"
            );
            assert!(day <= days_in_month(year, month), "{year}-{month}-{day}");
            date = date.tomorrow().expect("within jiff's range");
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
    }

    /// Goal: cached offsets give what jiff gives, across a DST change.
    /// Method: convert every quarter hour of two days around Berlin's
    /// spring and autumn changes, with one context reused throughout, and
    /// compare with jiff's compatible conversion.
    #[test]
    fn local_conversion_matches_jiff_across_transitions() {
        let mut time = TimeContext::named("Europe/Berlin")
            .expect("the time zone database (Debian package tzdata) is installed");
        for (month, day) in [(3, 29), (10, 25)] {
            for quarter in 0..(2 * 24 * 4) {
                let hour = (quarter / 4) % 24;
                let day = day + quarter / 96;
                let minute = (quarter % 4) * 15;
                let civil =
                    CivilTime::new((2026, month, day), (hour, minute, 30), 0).expect("valid");
                let expected = jiff::civil::date(2026, month as i8, day as i8)
                    .at(hour as i8, minute as i8, 30, 0)
                    .to_zoned(time.zone().clone())
                    .expect("compatible")
                    .timestamp()
                    .as_second();
                assert_eq!(
                    time.local_to_utc_seconds(&civil),
                    Some(expected),
                    "{civil:?}"
                );
            }
        }
    }

    /// Goal: the receive offset cache gives jiff's offset on each side of a change.
    /// Method: step a minute at a time through Berlin's autumn change.
    #[test]
    fn receive_offset_matches_jiff_across_transition() {
        let mut time = TimeContext::named("Europe/Berlin")
            .expect("the time zone database (Debian package tzdata) is installed");
        let start = jiff::Timestamp::from_second(1_792_800_000)
            .expect("valid")
            .as_second();
        for minute in 0..(48 * 60) {
            let seconds = start + minute * 60;
            let expected = time
                .zone()
                .to_offset(Timestamp::from_second(seconds).expect("valid"))
                .seconds();
            assert_eq!(time.offset_at(seconds), expected, "{seconds}");
        }
    }
}

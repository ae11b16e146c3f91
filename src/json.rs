//! JSON text primitives shared by the encoders and the DLQ dump: quoted
//! strings (invalid UTF-8 becomes U+FFFD, as in `String::from_utf8_lossy`),
//! RFC 3339 timestamps with nanoseconds, and label objects. Each appends to
//! a caller's buffer and allocates nothing once the buffer has grown.

/// Writes `{"key":"value",...}` from label strings.
pub fn write_string_labels(out: &mut Vec<u8>, labels: &[(&str, &str)]) {
    out.push(b'{');
    for (index, (key, value)) in labels.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_json_string(out, key.as_bytes());
        out.push(b':');
        write_json_string(out, value.as_bytes());
    }
    out.push(b'}');
}

/// Writes `bytes` as a quoted JSON string, replacing invalid UTF-8.
pub fn write_json_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for chunk in bytes.utf8_chunks() {
        write_escaped(out, chunk.valid().as_bytes());
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{FFFD}".as_bytes());
        }
    }
    out.push(b'"');
}

/// Appends `text` (valid UTF-8) with JSON escapes. Eight bytes at a time
/// are checked for a byte that needs escaping (a control byte, `"` or `\\`);
/// runs without one are copied whole.
fn write_escaped(out: &mut Vec<u8>, text: &[u8]) {
    let mut run_start = 0;
    let mut index = 0;
    while index < text.len() {
        if let Some(word) = text.get(index..index + 8) {
            let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
            if !word_needs_escape(word) {
                index += 8;
                continue;
            }
        }
        let byte = text[index];
        if byte < 0x20 || byte == b'"' || byte == b'\\' {
            out.extend_from_slice(&text[run_start..index]);
            write_escape(out, byte);
            run_start = index + 1;
        }
        index += 1;
    }
    out.extend_from_slice(&text[run_start..]);
}

/// True if any byte of `word` is below 0x20, `"` or `\\` (exact: the
/// "has a byte less than n" and "has a zero byte" bit tricks).
fn word_needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    let quote = word ^ (ONES * u64::from(b'"'));
    let has_quote = quote.wrapping_sub(ONES) & !quote & HIGH;
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let has_backslash = backslash.wrapping_sub(ONES) & !backslash & HIGH;
    (below_space | has_quote | has_backslash) != 0
}

fn write_escape(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match byte {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        _ => {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        }
    }
}

/// Writes nanoseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
pub fn write_rfc3339_nanos(out: &mut Vec<u8>, timestamp_ns: u64) {
    let seconds = timestamp_ns / 1_000_000_000;
    let nanos = timestamp_ns % 1_000_000_000;
    let days = seconds / 86_400;
    let second_of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    write_digits(out, year, 4);
    out.push(b'-');
    write_digits(out, month, 2);
    out.push(b'-');
    write_digits(out, day, 2);
    out.push(b'T');
    write_digits(out, second_of_day / 3600, 2);
    out.push(b':');
    write_digits(out, second_of_day / 60 % 60, 2);
    out.push(b':');
    write_digits(out, second_of_day % 60, 2);
    out.push(b'.');
    write_digits(out, nanos, 9);
    out.push(b'Z');
}

fn write_digits(out: &mut Vec<u8>, mut value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    for slot in digits[..width].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out.extend_from_slice(&digits[..width]);
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's
/// `civil_from_days`, for dates from 1970 on.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc3339(timestamp_ns: u64) -> String {
        let mut out = Vec::new();
        write_rfc3339_nanos(&mut out, timestamp_ns);
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn timestamps_at_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
        assert_eq!(
            rfc3339(1_795_737_599_999_999_999),
            "2026-11-26T23:59:59.999999999Z"
        );
        assert_eq!(
            rfc3339(4_107_542_400_000_000_000),
            "2100-03-01T00:00:00.000000000Z"
        );
    }

    /// The word test against a naive per-byte test, for every byte value
    /// at every position.
    #[test]
    fn word_test_matches_naive_test() {
        let naive = |byte: u8| byte < 0x20 || byte == b'"' || byte == b'\\';
        for position in 0..8 {
            for byte in 0..=255u8 {
                let mut bytes = [b'a'; 8];
                bytes[position] = byte;
                assert_eq!(
                    word_needs_escape(u64::from_le_bytes(bytes)),
                    naive(byte),
                    "byte {byte:#x} at {position}"
                );
            }
        }
        let mut out = Vec::new();
        let text: Vec<u8> = (0..=127u8).collect();
        write_escaped(&mut out, &text);
        let parsed: String = serde_json::from_slice(&[b"\"".as_slice(), &out, b"\""].concat())
            .expect("valid JSON string");
        assert_eq!(parsed.as_bytes(), text.as_slice());
    }
}

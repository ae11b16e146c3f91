//! RFC 5424 structured data (§6.3): one scanner, used by the parser to find
//! where the field ends and by [`structured_data_params`] to hand out its
//! parameters, so that the two can never disagree on what is well formed.
//!
//! ```text
//! STRUCTURED-DATA = NILVALUE / 1*SD-ELEMENT
//! SD-ELEMENT      = "[" SD-ID *(SP SD-PARAM) "]"
//! SD-PARAM        = PARAM-NAME "=" %d34 PARAM-VALUE %d34
//! SD-ID, PARAM-NAME = 1*32 PRINTUSASCII except '=', SP, ']', %d34
//! PARAM-VALUE     = UTF-8, with '"', '\' and ']' escaped by '\'
//! ```
//!
//! Allowance: an unescaped `]` inside a quoted value is taken as part of
//! the value (senders forget to escape it, and the quotes make it
//! unambiguous). Scanning allocates nothing; its errors count offsets from
//! the first byte of the field.

use super::{ParseError, SD_NAME_BYTES_MAX, StructuredDataProblem};

/// One SD-PARAM and the SD-ID of its element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SdParam<'a> {
    pub sd_id: &'a str,
    pub name: &'a str,
    /// The PARAM-VALUE between its quotes, escapes as sent; UTF-8 (checked).
    /// [`unescape_param_value`] decodes it.
    pub value: &'a [u8],
}

/// Where the scanner is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State<'a> {
    /// Before the first element: `[` must come.
    Start,
    /// After an SD-ID or a parameter: a space and a parameter, or `]`.
    InElement { sd_id: &'a str },
    /// After `]`: another element, or the end of the field.
    BetweenElements,
    /// Ended, or failed (an error is yielded once).
    Done,
}

/// The parameters of a structured-data field, in order: see
/// [`structured_data_params`].
#[derive(Clone, Debug)]
pub struct StructuredDataParams<'a> {
    input: &'a [u8],
    /// Next byte to read; never past `input.len()`.
    position: usize,
    state: State<'a>,
    /// Whether the field must fill `input` (true), or may be followed by
    /// more (the parser's case: a space and MSG).
    whole: bool,
}

/// Iterates the parameters of a structured-data field (as in
/// [`Message::structured_data`](super::Message::structured_data)):
/// `(sd_id, name, raw value)` for each SD-PARAM, element by element. An
/// element without parameters yields nothing. `-` and an empty slice
/// yield nothing. Malformed data yields one error (with its offset in
/// `sd`) and then ends; a field taken from a parsed [`Message`](super::Message)
/// never does.
pub fn structured_data_params(sd: &[u8]) -> StructuredDataParams<'_> {
    let state = if sd.is_empty() || sd == b"-" {
        State::Done
    } else {
        State::Start
    };
    StructuredDataParams {
        input: sd,
        position: 0,
        state,
        whole: true,
    }
}

/// The length of the structured data that starts `input` (at a `[`), after
/// checking all of it.
pub(super) fn structured_data_length(input: &[u8]) -> Result<usize, ParseError> {
    let mut params = StructuredDataParams {
        input,
        position: 0,
        state: State::Start,
        whole: false,
    };
    for param in params.by_ref() {
        param?;
    }
    debug_assert!(
        params.position <= input.len(),
        "{} > {}",
        params.position,
        input.len()
    );
    Ok(params.position)
}

/// Appends a PARAM-VALUE to `out` with its escapes decoded: `\"`, `\\` and
/// `\]` become the character; any other backslash is kept, as RFC 5424
/// §6.3.3 requires.
pub fn unescape_param_value(raw: &[u8], out: &mut Vec<u8>) {
    let mut rest = raw;
    while let Some(backslash) = memchr::memchr(b'\\', rest) {
        out.extend_from_slice(&rest[..backslash]);
        match rest.get(backslash + 1) {
            Some(&escaped @ (b'"' | b'\\' | b']')) => {
                out.push(escaped);
                rest = &rest[backslash + 2..];
            }
            _ => {
                out.push(b'\\');
                rest = &rest[backslash + 1..];
            }
        }
    }
    out.extend_from_slice(rest);
}

/// Whether a byte may be part of an SD-NAME.
#[inline]
fn is_name_byte(byte: u8) -> bool {
    (33..=126).contains(&byte) && !matches!(byte, b'=' | b']' | b'"')
}

impl<'a> StructuredDataParams<'a> {
    fn fail(&mut self, problem: StructuredDataProblem, offset: usize) -> ParseError {
        self.state = State::Done;
        ParseError::StructuredData { problem, offset }
    }

    /// The bytes of an SD-NAME at the position, up to the first byte that
    /// cannot be in one; moves past them and checks the length.
    fn name(
        &mut self,
        empty: StructuredDataProblem,
        too_long: StructuredDataProblem,
    ) -> Result<&'a str, ParseError> {
        let start = self.position;
        let rest = &self.input[start..];
        let length_bytes = rest
            .iter()
            .position(|&byte| !is_name_byte(byte))
            .unwrap_or(rest.len());
        if length_bytes == 0 {
            let problem = if rest.is_empty() {
                StructuredDataProblem::ElementNotClosed
            } else {
                empty
            };
            return Err(self.fail(problem, start));
        }
        if length_bytes > SD_NAME_BYTES_MAX {
            return Err(self.fail(too_long, start));
        }
        self.position += length_bytes;
        // Printable US-ASCII only, so always UTF-8.
        std::str::from_utf8(&rest[..length_bytes])
            .map_err(|_| self.fail(StructuredDataProblem::NameByte, start))
    }

    /// `[` and an SD-ID.
    fn open_element(&mut self) -> Result<(), ParseError> {
        if self.input.get(self.position) != Some(&b'[') {
            return Err(self.fail(StructuredDataProblem::ElementNotOpened, self.position));
        }
        self.position += 1;
        let sd_id = self.name(
            StructuredDataProblem::IdEmpty,
            StructuredDataProblem::IdTooLong,
        )?;
        match self.input.get(self.position) {
            Some(b' ' | b']') => {
                self.state = State::InElement { sd_id };
                Ok(())
            }
            None => Err(self.fail(StructuredDataProblem::ElementNotClosed, self.position)),
            Some(_) => Err(self.fail(StructuredDataProblem::NameByte, self.position)),
        }
    }

    /// `NAME="VALUE"` at the position (after its space).
    fn param(&mut self, sd_id: &'a str) -> Result<SdParam<'a>, ParseError> {
        let name = self.name(
            StructuredDataProblem::ParamNameEmpty,
            StructuredDataProblem::ParamNameTooLong,
        )?;
        let problem = match self.input.get(self.position) {
            Some(b'=') => match self.input.get(self.position + 1) {
                Some(b'"') => None,
                None => Some(StructuredDataProblem::ElementNotClosed),
                Some(_) => Some(StructuredDataProblem::ValueNotQuoted),
            },
            None => Some(StructuredDataProblem::ElementNotClosed),
            Some(b' ' | b']' | b'"') => Some(StructuredDataProblem::EqualsMissing),
            Some(_) => Some(StructuredDataProblem::NameByte),
        };
        if let Some(problem) = problem {
            return Err(self.fail(problem, self.position));
        }
        let start = self.position + 2;
        let (end, is_ascii) = self.value_end(start)?;
        let value = &self.input[start..end];
        if !is_ascii && std::str::from_utf8(value).is_err() {
            return Err(self.fail(StructuredDataProblem::ValueNotUtf8, start));
        }
        self.position = end + 1;
        Ok(SdParam { sd_id, name, value })
    }

    /// The offset of the `"` that closes a value starting at `start`, and
    /// whether the value is all ASCII (then it needs no UTF-8 check).
    /// Values are short (a few to tens of bytes): a plain loop beats
    /// `memchr` setting up for each.
    fn value_end(&mut self, start: usize) -> Result<(usize, bool), ParseError> {
        let mut high_bits = 0u8;
        let mut position = start;
        while let Some(&byte) = self.input.get(position) {
            match byte {
                b'"' => return Ok((position, high_bits < 0x80)),
                // A backslash hides the byte after it (RFC 5424 §6.3.3).
                b'\\' => {
                    high_bits |= self.input.get(position + 1).copied().unwrap_or(0);
                    position += 2;
                }
                _ => {
                    high_bits |= byte;
                    position += 1;
                }
            }
        }
        Err(self.fail(StructuredDataProblem::ValueNotClosed, start))
    }

    /// After `]`: opens the next element if one follows; ends otherwise.
    fn after_element(&mut self) -> Result<bool, ParseError> {
        match self.input.get(self.position) {
            Some(b'[') => self.open_element().map(|()| true),
            Some(_) if self.whole => {
                Err(self.fail(StructuredDataProblem::ElementNotOpened, self.position))
            }
            _ => {
                self.state = State::Done;
                Ok(false)
            }
        }
    }
}

impl<'a> Iterator for StructuredDataParams<'a> {
    type Item = Result<SdParam<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Each pass consumes at least one byte or ends, so the loop is
        // bounded by the input's length.
        loop {
            match self.state {
                State::Done => return None,
                State::Start => {
                    if let Err(error) = self.open_element() {
                        return Some(Err(error));
                    }
                }
                State::BetweenElements => match self.after_element() {
                    Ok(true) => {}
                    Ok(false) => return None,
                    Err(error) => return Some(Err(error)),
                },
                State::InElement { sd_id } => match self.input.get(self.position) {
                    Some(b']') => {
                        self.position += 1;
                        self.state = State::BetweenElements;
                    }
                    Some(b' ') => {
                        self.position += 1;
                        return Some(self.param(sd_id));
                    }
                    None => {
                        return Some(Err(
                            self.fail(StructuredDataProblem::ElementNotClosed, self.position)
                        ));
                    }
                    Some(_) => {
                        return Some(Err(
                            self.fail(StructuredDataProblem::SpaceOrCloseExpected, self.position)
                        ));
                    }
                },
            }
        }
    }
}

impl std::iter::FusedIterator for StructuredDataParams<'_> {}

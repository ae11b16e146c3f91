//! Syslog message parsing (RFC 5424 and RFC 3164): interface only, while
//! the parsers are written.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Rfc5424,
    Rfc3164,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    pub facility: u8,
    pub severity: u8,
}

#[derive(Debug, Clone)]
pub struct Message<'a> {
    pub format: Format,
    pub priority: Option<Priority>,
    pub timestamp_ns: Option<u64>,
    pub host: Option<&'a str>,
    pub app: Option<&'a str>,
    pub procid: Option<&'a str>,
    pub msgid: Option<&'a str>,
    pub structured_data: Option<&'a [u8]>,
    pub message: &'a [u8],
}

#[derive(Debug)]
pub struct TimeContext;

impl TimeContext {
    pub fn system() -> Self {
        TimeContext
    }
    pub fn named(_name: &str) -> Result<Self, ParseError> {
        Ok(TimeContext)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("syslog priority")]
    Priority,
}

pub fn parse<'a>(
    input: &'a [u8],
    _received_ns: u64,
    _time: &mut TimeContext,
) -> Result<Message<'a>, ParseError> {
    if input.first() != Some(&b'<') {
        return Err(ParseError::Priority);
    }
    let end = input
        .iter()
        .position(|&b| b == b'>')
        .ok_or(ParseError::Priority)?;
    let value: u8 = std::str::from_utf8(&input[1..end])
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or(ParseError::Priority)?;
    Ok(Message {
        format: Format::Rfc3164,
        priority: Some(Priority {
            facility: value / 8,
            severity: value % 8,
        }),
        timestamp_ns: None,
        host: None,
        app: None,
        procid: None,
        msgid: None,
        structured_data: None,
        message: &input[end + 1..],
    })
}

pub fn severity_name(severity: u8) -> &'static str {
    [
        "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
    ][usize::from(severity & 7)]
}

pub fn facility_name(facility: u8) -> &'static str {
    [
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
    ][usize::from(facility).min(23)]
}

#[derive(Debug)]
pub struct SdParam<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub value: &'a [u8],
}

pub fn structured_data_params(_sd: &[u8]) -> std::vec::IntoIter<Result<SdParam<'_>, ParseError>> {
    Vec::new().into_iter()
}

pub fn unescape_param_value(raw: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(raw);
}

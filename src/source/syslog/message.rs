//! Syslog message parsing (RFC 5424 and RFC 3164).

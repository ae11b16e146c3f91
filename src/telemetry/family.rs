//! Metric families, each declared once, and the writer of the Prometheus
//! text exposition format (version 0.0.4).
//!
//! A [`Family`] holds a family's name, type and help. The module that owns
//! the figures declares it as a `static` next to the code that renders it,
//! and writes the `# HELP`/`# TYPE` header and every sample line through
//! it, so the name is written in one place:
//!
//! ```text
//! pub static MESSAGES: Family = Family::counter("example_messages_total", "Messages sent.");
//!
//! MESSAGES.header(out);
//! MESSAGES.sample(out, &[("sink", "main")], 42_u64);
//! ```
//!
//! writes
//!
//! ```text
//! # HELP example_messages_total Messages sent.
//! # TYPE example_messages_total counter
//! example_messages_total{sink="main"} 42
//! ```
//!
//! (`tests::writes_header_and_sample` runs this example.)
//!
//! A component with figures of its own (a sink kind, say) declares its
//! families in its own folder, writes a `render(out: &mut Exposition,
//! figures: &TheirFigures)` that calls `header` once per family and then
//! `sample` per series, and gets one call in `Exporter::render`, where the
//! order of the exposition is decided. `telemetry/exposition/kafka.rs` is
//! such a group.
//!
//! Invariants:
//! * A declaration is checked when the crate compiles (the constructors are
//!   `const fn` and a `static` is evaluated at compile time): the name is a
//!   valid metric name, a counter's name ends in `_total` and no other
//!   kind's does (promtool's lint), and the help is one line without a
//!   backslash, as it is written unescaped.
//! * Samples follow their family's header with no other header between,
//!   and no family's header is written twice: Prometheus rejects an
//!   exposition that splits or repeats a family. Debug builds assert both.
//!
//! Allocation: the text grows in one `String`, on the metrics thread that
//! renders it; no stage ever writes here.

use std::fmt::Write;

use hdrhistogram::Histogram;

/// Upper bounds of the latency histogram buckets, in seconds.
pub const BUCKETS_SECONDS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// The metric type of a family, as `# TYPE` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// Cumulative buckets, a sum and a count, from an hdrhistogram of
    /// microseconds.
    Histogram,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family: the single place its name, type and help are written.
/// The fields are private so that every family passes the checks of
/// [`Family::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    name: &'static str,
    kind: Kind,
    /// One line, without backslashes (written as is after `# HELP`).
    help: &'static str,
}

/// A sample's value.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Integer(u64),
    /// Written as Rust prints it (`0.5`, `7`, `1e-7`); a value that is not
    /// finite is written as 0, as a scrape cannot carry it usefully.
    Float(f64),
    /// Microseconds, written with the buckets of [`BUCKETS_SECONDS`].
    Histogram(&'a Histogram<u64>),
}

/// One number on a sample line; a histogram is written as several.
#[derive(Debug, Clone, Copy)]
enum Number {
    Integer(u64),
    Float(f64),
}

impl From<u64> for Value<'_> {
    fn from(value: u64) -> Self {
        Value::Integer(value)
    }
}

impl From<f64> for Value<'_> {
    fn from(value: f64) -> Self {
        Value::Float(value)
    }
}

impl<'a> From<&'a Histogram<u64>> for Value<'a> {
    fn from(histogram: &'a Histogram<u64>) -> Self {
        Value::Histogram(histogram)
    }
}

impl Family {
    pub const fn counter(name: &'static str, help: &'static str) -> Family {
        Family::new(name, Kind::Counter, help)
    }

    pub const fn gauge(name: &'static str, help: &'static str) -> Family {
        Family::new(name, Kind::Gauge, help)
    }

    pub const fn histogram(name: &'static str, help: &'static str) -> Family {
        Family::new(name, Kind::Histogram, help)
    }

    /// Checks the declaration (see the module doc); in a `static` a
    /// failed check stops the build.
    pub const fn new(name: &'static str, kind: Kind, help: &'static str) -> Family {
        assert!(
            is_metric_name(name),
            "a metric name matches [a-zA-Z_:][a-zA-Z0-9_:]*"
        );
        let total = ends_with(name, "_total");
        match kind {
            Kind::Counter => assert!(total, "a counter's name ends in _total"),
            Kind::Gauge | Kind::Histogram => {
                assert!(!total, "only a counter's name ends in _total")
            }
        }
        assert!(
            is_help_line(help),
            "a help text is one non-empty line without backslashes"
        );
        Family { name, kind, help }
    }

    pub const fn name(&self) -> &'static str {
        self.name
    }

    pub const fn kind(&self) -> Kind {
        self.kind
    }

    pub const fn help(&self) -> &'static str {
        self.help
    }

    /// Writes `# HELP` and `# TYPE`. Once per exposition, and before the
    /// family's samples, even when there are none.
    pub fn header(&self, out: &mut Exposition) {
        debug_assert!(
            !out.families_written.contains(&self.name),
            "family {} written twice",
            self.name
        );
        out.families_written.push(self.name);
        out.open_family = Some(self.name);
        let Family { name, kind, help } = self;
        let kind = kind.as_str();
        // Writing to a String cannot fail.
        let _ = writeln!(out.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// Writes one series: a sample line, or for a histogram its buckets,
    /// sum and count. Label values are escaped; label names are written as
    /// given.
    pub fn sample<'a>(
        &self,
        out: &mut Exposition,
        labels: &[(&str, &str)],
        value: impl Into<Value<'a>>,
    ) {
        debug_assert_eq!(
            out.open_family,
            Some(self.name),
            "a sample follows its family's header"
        );
        let value = value.into();
        debug_assert_eq!(
            matches!(value, Value::Histogram(_)),
            self.kind == Kind::Histogram,
            "{} takes a histogram exactly when it is one",
            self.name
        );
        match value {
            Value::Histogram(histogram) => out.histogram(self.name, labels, histogram),
            Value::Integer(value) => out.line(self.name, "", labels, None, Number::Integer(value)),
            Value::Float(value) => out.line(self.name, "", labels, None, Number::Float(value)),
        }
    }
}

const fn is_metric_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        let first = byte.is_ascii_alphabetic() || byte == b'_' || byte == b':';
        if !(first || (index > 0 && byte.is_ascii_digit())) {
            return false;
        }
        index += 1;
    }
    !bytes.is_empty()
}

const fn ends_with(text: &str, suffix: &str) -> bool {
    let (text, suffix) = (text.as_bytes(), suffix.as_bytes());
    if text.len() < suffix.len() {
        return false;
    }
    let offset = text.len() - suffix.len();
    let mut index = 0;
    while index < suffix.len() {
        if text[offset + index] != suffix[index] {
            return false;
        }
        index += 1;
    }
    true
}

const fn is_help_line(help: &str) -> bool {
    let bytes = help.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'\n' || bytes[index] == b'\\' {
            return false;
        }
        index += 1;
    }
    !bytes.is_empty()
}

/// An exposition being written.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
    /// The family whose header was written last: the only one whose
    /// samples may be written now.
    open_family: Option<&'static str>,
    /// Every header written so far, to catch a family written twice.
    families_written: Vec<&'static str>,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn into_text(self) -> String {
        self.text
    }

    /// `{name}{suffix}{labels} {value}`. `extra` is one more label after
    /// `labels` (a histogram bucket's `le`).
    fn line(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &[(&str, &str)],
        extra: Option<(&str, &str)>,
        value: Number,
    ) {
        self.text.push_str(name);
        self.text.push_str(suffix);
        self.labels(labels, extra);
        // Writing to a String cannot fail.
        let _ = match value {
            Number::Integer(value) => writeln!(self.text, " {value}"),
            Number::Float(value) => {
                let value = if value.is_finite() { value } else { 0.0 };
                writeln!(self.text, " {value}")
            }
        };
    }

    fn labels(&mut self, labels: &[(&str, &str)], extra: Option<(&str, &str)>) {
        let mut all = labels.iter().copied().chain(extra);
        let Some(first) = all.next() else {
            return;
        };
        self.text.push('{');
        self.label(first);
        for label in all {
            self.text.push(',');
            self.label(label);
        }
        self.text.push('}');
    }

    /// `key="value"`, the value escaped as the format requires.
    fn label(&mut self, (key, value): (&str, &str)) {
        self.text.push_str(key);
        self.text.push_str("=\"");
        for character in value.chars() {
            match character {
                '\\' => self.text.push_str("\\\\"),
                '"' => self.text.push_str("\\\""),
                '\n' => self.text.push_str("\\n"),
                other => self.text.push(other),
            }
        }
        self.text.push('"');
    }

    /// A Prometheus histogram from an hdrhistogram of microseconds:
    /// cumulative buckets, `+Inf`, the sum in seconds and the count.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], histogram: &Histogram<u64>) {
        for bound in BUCKETS_SECONDS {
            let micros = (bound * 1e6) as u64;
            let count = if histogram.is_empty() {
                0
            } else {
                histogram.count_between(0, micros)
            };
            let le = format!("{bound}");
            let le = Some(("le", le.as_str()));
            self.line(name, "_bucket", labels, le, Number::Integer(count));
        }
        let count = Number::Integer(histogram.len());
        self.line(name, "_bucket", labels, Some(("le", "+Inf")), count);
        let sum_seconds = histogram.mean() * histogram.len() as f64 / 1e6;
        self.line(name, "_sum", labels, None, Number::Float(sum_seconds));
        self.line(name, "_count", labels, None, count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static MESSAGES: Family = Family::counter("example_messages_total", "Messages sent.");
    static WAIT: Family = Family::histogram("example_wait_seconds", "Time waited.");

    /// Goal: the module doc's example writes what the doc says. Method:
    /// run it.
    #[test]
    fn writes_header_and_sample() {
        let mut out = Exposition::new();
        MESSAGES.header(&mut out);
        MESSAGES.sample(&mut out, &[("sink", "main")], 42_u64);
        assert_eq!(
            out.into_text(),
            "# HELP example_messages_total Messages sent.\n\
             # TYPE example_messages_total counter\n\
             example_messages_total{sink=\"main\"} 42\n"
        );
    }

    /// Goal: label values with a quote, a backslash or a newline stay one
    /// label value, and a value that is not finite becomes 0. Method: one
    /// sample of each.
    #[test]
    fn escapes_label_values_and_zeroes_non_finite_values() {
        let mut out = Exposition::new();
        MESSAGES.header(&mut out);
        MESSAGES.sample(&mut out, &[("path", "a\"b\\c\nd")], f64::NAN);
        MESSAGES.sample(&mut out, &[], f64::INFINITY);
        assert!(out.as_str().ends_with(
            "example_messages_total{path=\"a\\\"b\\\\c\\nd\"} 0\nexample_messages_total 0\n"
        ));
    }

    /// Goal: a histogram without labels still gets `{le=...}` on its
    /// buckets and none on its sum and count. Method: an empty histogram.
    #[test]
    fn empty_histogram_without_labels() {
        let histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).expect("bounds");
        let mut out = Exposition::new();
        WAIT.header(&mut out);
        WAIT.sample(&mut out, &[], &histogram);
        let text = out.into_text();
        assert!(text.contains("example_wait_seconds_bucket{le=\"0.0005\"} 0\n"));
        assert!(text.contains("example_wait_seconds_bucket{le=\"60\"} 0\n"));
        assert!(text.ends_with(
            "example_wait_seconds_bucket{le=\"+Inf\"} 0\n\
             example_wait_seconds_sum 0\n\
             example_wait_seconds_count 0\n"
        ));
    }

    /// Goal: a sample written away from its family's header is caught
    /// (Prometheus rejects a split family). Method: a header, then a sample
    /// of another family.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "a sample follows its family's header")]
    fn sample_outside_its_family_is_caught() {
        let mut out = Exposition::new();
        WAIT.header(&mut out);
        MESSAGES.sample(&mut out, &[], 1_u64);
    }

    /// Goal: a family written twice is caught. Method: two headers.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "written twice")]
    fn family_written_twice_is_caught() {
        let mut out = Exposition::new();
        MESSAGES.header(&mut out);
        MESSAGES.header(&mut out);
    }

    /// Goal: the compile-time checks accept good declarations and refuse
    /// bad ones. Method: call the checks directly (a bad `static` would not
    /// compile, so it cannot be a test).
    #[test]
    fn declaration_checks() {
        assert!(is_metric_name("log_capturer:x_1"));
        assert!(!is_metric_name("1x"));
        assert!(!is_metric_name("a-b"));
        assert!(!is_metric_name(""));
        assert!(ends_with("a_total", "_total"));
        assert!(!ends_with("total", "_total"));
        assert!(is_help_line("One line."));
        assert!(!is_help_line("two\nlines"));
        assert!(!is_help_line("a \\ b"));
        assert!(!is_help_line(""));
    }
}

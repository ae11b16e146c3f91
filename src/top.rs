//! `log-capturer top`: a compact live view of a running daemon, read from
//! its `/metrics` endpoint once a second, in the manner of `vector top`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Why the view could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error("cannot connect to {address}")]
    Connect {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read /metrics from {address}")]
    Read {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{address} answered /metrics with {status_line:?}")]
    Status {
        address: SocketAddr,
        status_line: String,
    },
}

/// Samples by metric name, then by label text (`sink="x",...`).
pub type Samples = BTreeMap<String, BTreeMap<String, f64>>;

/// Fetches and parses `/metrics`.
pub fn fetch(address: SocketAddr) -> Result<Samples, TopError> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))
        .map_err(|source| TopError::Connect { address, source })?;
    let read_error = |source| TopError::Read { address, source };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(read_error)?;
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .map_err(read_error)?;
    let mut text = String::new();
    stream.read_to_string(&mut text).map_err(read_error)?;
    let status_line = text.lines().next().unwrap_or("").to_string();
    if !status_line.contains(" 200 ") {
        return Err(TopError::Status {
            address,
            status_line,
        });
    }
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok(parse(body))
}

/// Parses the text exposition (samples only; comments skipped).
pub fn parse(body: &str) -> Samples {
    let mut samples = Samples::new();
    for line in body
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
    {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        samples
            .entry(name.to_string())
            .or_default()
            .insert(labels.to_string(), value);
    }
    samples
}

fn sum(samples: &Samples, name: &str, label_filter: &str) -> f64 {
    samples
        .get(name)
        .map(|series| {
            series
                .iter()
                .filter(|(labels, _)| labels.contains(label_filter))
                .map(|(_, value)| value)
                .sum()
        })
        .unwrap_or(0.0)
}

/// The value of label `key` in a label text.
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{key}=\""))? + key.len() + 2;
    let end = labels[start..].find('"')? + start;
    Some(&labels[start..end])
}

/// Renders one view from two samples `elapsed` apart.
pub fn render(previous: &Samples, current: &Samples, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64().max(1e-3);
    let rate = |name: &str, filter: &str| {
        (sum(current, name, filter) - sum(previous, name, filter)).max(0.0) / seconds
    };
    let mut out = String::new();
    let processed = "log_capturer_logs_processed_total";
    out.push_str(&format!(
        "in: {:>12.0} lines/s   total {:>14.0}   queue depth {:>8.0}   batches in flight {:>3.0}\n",
        rate(processed, ""),
        sum(current, processed, ""),
        sum(current, "log_capturer_dispatcher_queue_depth", ""),
        sum(
            current,
            "log_capturer_queue_size",
            "queue_type=\"batches_in_flight\""
        ),
    ));
    out.push_str(&format!(
        "{:<20} {:<8} {:>12} {:>14} {:>12} {:>8}\n",
        "sink", "type", "lines/s", "sent", "to DLQ", "breaker"
    ));
    if let Some(sinks) = current.get("log_capturer_sink_logs_total") {
        for labels in sinks
            .keys()
            .filter(|labels| labels.contains("status=\"success\""))
        {
            let sink = label(labels, "sink").unwrap_or("?");
            let sink_type = label(labels, "sink_type").unwrap_or("?");
            let filter = format!("sink=\"{sink}\",");
            let failed_filter =
                format!("sink=\"{sink}\",sink_type=\"{sink_type}\",status=\"error\"");
            let breaker = current
                .get("kafka_circuit_breaker_state")
                .and_then(|states| states.get(&format!("sink_name=\"{sink}\"")))
                .map_or("-", |&state| if state > 0.0 { "OPEN" } else { "closed" });
            out.push_str(&format!(
                "{:<20} {:<8} {:>12.0} {:>14.0} {:>12.0} {:>8}\n",
                sink,
                sink_type,
                rate(
                    "log_capturer_sink_logs_total",
                    &format!("{filter}sink_type=\"{sink_type}\",status=\"success\"")
                ),
                sum(
                    current,
                    "log_capturer_sink_logs_total",
                    &format!("{filter}sink_type=\"{sink_type}\",status=\"success\"")
                ),
                sum(current, "log_capturer_sink_logs_total", &failed_filter),
                breaker,
            ));
        }
    }
    out.push_str(&format!(
        "retry queue {:>8.0}   DLQ {:>10.0} bytes   RSS {:>8.1} MiB   threads {:>3.0}   fds {:>4.0}   cpu {:>5.1}%\n",
        sum(current, "log_capturer_dispatcher_retry_queue_size", ""),
        sum(current, "log_capturer_dlq_size_bytes", ""),
        sum(current, "log_capturer_memory_usage_bytes", "type=\"rss\"") / 1048576.0,
        sum(current, "log_capturer_threads", ""),
        sum(current, "log_capturer_file_descriptors_open", ""),
        sum(current, "log_capturer_cpu_usage_percent", ""),
    ));
    out
}

/// Shows the view every second, or once.
pub fn run(address: SocketAddr, once: bool) -> Result<(), TopError> {
    let mut previous = fetch(address)?;
    let mut previous_at = Instant::now();
    let clear = std::io::IsTerminal::is_terminal(&std::io::stdout()) && !once;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let current = fetch(address)?;
        let view = render(&previous, &current, previous_at.elapsed());
        let mut stdout = std::io::stdout();
        if clear {
            let _ = write!(stdout, "\x1b[2J\x1b[H");
        }
        let _ = write!(stdout, "log-capturer at {address}\n{view}");
        let _ = stdout.flush();
        if once {
            return Ok(());
        }
        previous = current;
        previous_at = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders_rates() {
        let before = parse(
            "# TYPE x counter\nlog_capturer_logs_processed_total{source_type=\"file\",source_id=\"a\",pipeline=\"default\"} 100\nlog_capturer_sink_logs_total{sink=\"k\",sink_type=\"kafka\",status=\"success\"} 50\nlog_capturer_sink_logs_total{sink=\"k\",sink_type=\"kafka\",status=\"error\"} 0\n",
        );
        let after = parse(
            "log_capturer_logs_processed_total{source_type=\"file\",source_id=\"a\",pipeline=\"default\"} 1100\nlog_capturer_sink_logs_total{sink=\"k\",sink_type=\"kafka\",status=\"success\"} 550\nlog_capturer_sink_logs_total{sink=\"k\",sink_type=\"kafka\",status=\"error\"} 7\nlog_capturer_threads 6\nkafka_circuit_breaker_state{sink_name=\"k\"} 1\n",
        );
        let view = render(&before, &after, Duration::from_secs(2));
        assert!(view.contains("         500 lines/s"), "{view}");
        assert!(view.contains("k "), "{view}");
        assert!(view.contains(" 250 "), "{view}");
        assert!(view.contains("OPEN"), "{view}");
        assert!(view.contains("threads   6"), "{view}");
    }
}

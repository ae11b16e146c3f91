//! Syslog message parsing, one message per iteration: RFC 5424 with two
//! structured-data elements, logger's RFC 3164 form, and glibc's RFC 3164
//! form without a host. Offset-less timestamps are read in Europe/Berlin
//! (UTC when the host has no time zone database), so the offset cache is
//! on the measured path.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use log_capturer::source::syslog::message::{TimeContext, parse};

/// 2026-11-27T12:30:00Z.
const RECEIVED_NS: u64 = 1_795_782_600 * 1_000_000_000;

const RFC5424_TWO_ELEMENTS: &[u8] = br#"<165>1 2026-11-27T12:00:00.123456+01:00 web01.example.com nginx 4242 ACCESS [origin@32473 ip="192.0.2.10" software="nginx"][meta@32473 sequenceId="1234" sysUpTime="5678"] GET /index.html 200"#;
const RFC3164_LOGGER: &[u8] =
    b"<13>Nov 27 12:00:00 myhost mytag[4242]: hello from logger, a line of a typical length";
const RFC3164_GLIBC: &[u8] =
    b"<38>Nov 27 12:00:00 sshd[4242]: Accepted publickey for alice from 192.0.2.1 port 50000 ssh2";

fn bench_parse(criterion: &mut Criterion) {
    let mut time = TimeContext::named("Europe/Berlin").unwrap_or_else(|_| TimeContext::utc());
    let mut group = criterion.benchmark_group("syslog_parse");
    group.throughput(Throughput::Elements(1));
    let cases = [
        ("rfc5424_two_sd_elements", RFC5424_TWO_ELEMENTS),
        ("rfc3164_logger", RFC3164_LOGGER),
        ("rfc3164_glibc_no_host", RFC3164_GLIBC),
    ];
    for (name, input) in cases {
        assert!(
            parse(input, RECEIVED_NS, &mut time).is_ok(),
            "{name} parses"
        );
        group.bench_function(format!("{name}_{}b", input.len()), |bencher| {
            bencher.iter(|| black_box(parse(black_box(input), RECEIVED_NS, &mut time)).is_ok())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench_parse
}
criterion_main!(benches);

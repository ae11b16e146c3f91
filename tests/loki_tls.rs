//! A Loki sink over `https`: the server's certificate is checked against
//! `ca_file`, refused without it, and accepted unchecked only with
//! `insecure_skip_verify`. The real Loki of `../shared/loki` sits behind a
//! small TLS front (a certificate issued by a test authority for
//! 127.0.0.1) that passes bytes through both ways.

mod common;
#[path = "common/secure_front.rs"]
#[allow(dead_code)]
mod secure_front;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use common::loki::Loki;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslAcceptor, SslMethod};
use openssl::x509::X509;
use secure_front::Authority;

/// A TLS listener that forwards every connection's bytes to `upstream`.
struct TlsFront {
    address: SocketAddr,
    handshakes: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TlsFront {
    fn start(certificate: &X509, key: &PKey<Private>, upstream: SocketAddr) -> TlsFront {
        let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
        builder.set_certificate(certificate).expect("certificate");
        builder.set_private_key(key).expect("key");
        let acceptor = Arc::new(builder.build());
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let address = listener.local_addr().expect("address");
        let handshakes = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (handshakes, failures, stop) = (
                Arc::clone(&handshakes),
                Arc::clone(&failures),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                let mut connections = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let acceptor = Arc::clone(&acceptor);
                            let (handshakes, failures, stop) = (
                                Arc::clone(&handshakes),
                                Arc::clone(&failures),
                                Arc::clone(&stop),
                            );
                            connections.push(std::thread::spawn(move || {
                                stream.set_nonblocking(false).expect("blocking");
                                stream
                                    .set_read_timeout(Some(Duration::from_secs(5)))
                                    .expect("timeout");
                                match acceptor.accept(stream) {
                                    Ok(tls) => {
                                        handshakes.fetch_add(1, Ordering::Relaxed);
                                        let _ = pump(tls, upstream, &stop);
                                    }
                                    Err(_) => {
                                        failures.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }));
                        }
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(error) => panic!("accept: {error}"),
                    }
                }
                for connection in connections {
                    let _ = connection.join();
                }
            })
        };
        TlsFront {
            address,
            handshakes,
            failures,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Moves bytes both ways until either side closes, polling each side with
/// a short read timeout.
fn pump(
    mut client: openssl::ssl::SslStream<TcpStream>,
    upstream: SocketAddr,
    stop: &AtomicBool,
) -> io::Result<()> {
    const POLL: Duration = Duration::from_millis(2);
    client.get_ref().set_read_timeout(Some(POLL))?;
    let mut server = TcpStream::connect(upstream)?;
    server.set_read_timeout(Some(POLL))?;
    let mut buffer = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        match client.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(read) => server.write_all(&buffer[..read])?,
            Err(error) if is_timeout(&error) => {}
            Err(error) => return Err(error),
        }
        match server.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(read) => client.write_all(&buffer[..read])?,
            Err(error) if is_timeout(&error) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// `log_capturer_sink_logs_total{sink="loki",...,status}` of a daemon.
fn sink_lines(daemon: &common::Daemon, status: &str) -> f64 {
    let (_, body) = daemon.get("/metrics");
    common::sample(
        &body,
        &format!(
            "log_capturer_sink_logs_total{{sink=\"loki\",sink_type=\"loki\",status=\"{status}\"}}"
        ),
    )
    .unwrap_or(0.0)
}

fn transport_errors(daemon: &common::Daemon) -> f64 {
    let (_, body) = daemon.get("/metrics");
    common::sample(
        &body,
        "log_capturer_loki_error_type_total{sink=\"loki\",error_type=\"transport\"}",
    )
    .unwrap_or(0.0)
}

/// Goal: `https` works with the authority in `ca_file`, fails (transport
/// errors, nothing delivered) when the certificate cannot be checked, and
/// works unchecked with `insecure_skip_verify`. Method: three daemons, each
/// with its own stream, 1,000 lines each, through one TLS front to the
/// real Loki; the lines are read back from Loki.
#[test]
fn https_checks_the_certificate_against_ca_file() {
    let loki = Loki::start();
    let authority = Authority::new("log-capturer test CA");
    let (certificate, key) = authority.issue_server_certificate();
    let front = TlsFront::start(&certificate, &key, loki.http);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    authority.write_pem(&ca_file);
    let url = format!(
        "https://127.0.0.1:{}/loki/api/v1/push",
        front.address.port()
    );
    let cases = [
        (
            "trusted",
            format!("ca_file = \"{}\"", ca_file.display()),
            true,
        ),
        ("unchecked", "insecure_skip_verify = true".to_string(), true),
        ("untrusted", String::new(), false),
    ];
    let mut daemons = Vec::new();
    for (name, tls_keys, _) in &cases {
        let case_dir = dir.path().join(name);
        std::fs::create_dir_all(&case_dir).expect("case dir");
        let input = case_dir.join("input.log");
        let mut file = std::fs::File::create(&input).expect("input");
        common::write_numbered_lines(&mut file, 0, 1000);
        drop(file);
        let sink = format!(
            "[sinks.loki]\ntype = \"loki\"\nurl = \"{url}\"\nlabels = [\"source_id\"]\n\
             static_labels = {{ case = \"{name}\" }}\nprobe_interval_ms = 200\n{tls_keys}\n"
        );
        let config = common::write_file(
            &case_dir,
            "config.toml",
            &common::file_source_config(&input, "start_at = \"beginning\"", &sink),
        );
        daemons.push(common::Daemon::start(&config));
    }
    for ((name, _, delivers), daemon) in cases.iter().zip(&daemons) {
        if *delivers {
            common::wait_until(
                &format!("{name}: 1000 lines sent"),
                Duration::from_secs(30),
                || sink_lines(daemon, "success") >= 1000.0,
            );
        } else {
            common::wait_until(
                &format!("{name}: transport errors"),
                Duration::from_secs(30),
                || transport_errors(daemon) >= 2.0,
            );
        }
    }
    let now_ns = log_capturer::clock::now_ns();
    for ((name, _, delivers), daemon) in cases.iter().zip(daemons) {
        let stored = loki.entries(
            &format!("{{case=\"{name}\"}}"),
            now_ns - 600_000_000_000,
            now_ns + 60_000_000_000,
        );
        if *delivers {
            assert_eq!(stored.len(), 1000, "{name}");
            assert_eq!(transport_errors(&daemon), 0.0, "{name}");
        } else {
            assert!(stored.is_empty(), "{name}: {} stored", stored.len());
            assert_eq!(sink_lines(&daemon, "success"), 0.0, "{name}");
        }
        daemon.stop();
    }
    assert!(
        front.handshakes.load(Ordering::Relaxed) >= 2,
        "the trusted and unchecked daemons completed handshakes"
    );
    assert!(
        front.failures.load(Ordering::Relaxed) >= 1,
        "the untrusted daemon's handshakes failed"
    );
}

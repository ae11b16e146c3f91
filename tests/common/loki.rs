//! The real Loki of `../shared/loki` (Grafana Loki 2.7.3, see its README),
//! started by a test with its own directory and ports, and a small HTTP
//! client for its push and query endpoints.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Loki; killed and waited for on drop.
pub struct Loki {
    child: Child,
    pub http: SocketAddr,
    config_path: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

fn shared_loki() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/loki")
}

impl Loki {
    /// Starts Loki from `../shared/loki` with a copy of its config whose
    /// data directory and ports are this test's, and waits for `/ready`.
    pub fn start() -> Loki {
        Loki::start_with(|yaml| yaml.to_string())
    }

    /// As [`Loki::start`], with the config edited by `edit` first. `edit`
    /// sees the shared template as written (`/tmp/loki-data` and ports
    /// 3100/9096), so paths it adds under `/tmp/loki-data` land in this
    /// test's directory. Panics if the edit changed nothing.
    pub fn start_with(edit: impl FnOnce(&str) -> String) -> Loki {
        let shared = shared_loki();
        let binary = shared.join("loki");
        assert!(
            binary.exists(),
            "the Loki test server is missing: {} (the repository expects ../shared/loki beside it)",
            binary.display()
        );
        let template = std::fs::read_to_string(shared.join("loki-local.yaml"))
            .expect("../shared/loki/loki-local.yaml");
        let edited = edit(&template);
        let dir = tempfile::tempdir().expect("tempdir");
        let (http_port, grpc_port) = (super::free_port(), super::free_port());
        let data = dir.path().join("data");
        let config = edited
            .replace("/tmp/loki-data", &data.display().to_string())
            .replace(
                "http_listen_port: 3100",
                &format!("http_listen_port: {http_port}"),
            )
            // A query page of 50,000 entries is more than gRPC's default
            // 4 MiB between Loki's querier and its frontend.
            .replace(
                "grpc_listen_port: 9096",
                &format!(
                    "grpc_listen_port: {grpc_port}\n  grpc_server_max_recv_msg_size: 67108864\n  grpc_server_max_send_msg_size: 67108864"
                ),
            )
            .replace("127.0.0.1:9096", &format!("127.0.0.1:{grpc_port}"));
        let config_path = dir.path().join("loki.yaml");
        std::fs::write(&config_path, config).expect("config");
        let mut loki = Loki {
            child: spawn(&binary, &config_path),
            http: SocketAddr::from(([127, 0, 0, 1], http_port)),
            config_path,
            data,
            _dir: dir,
        };
        loki.wait_ready(Duration::from_secs(30));
        loki
    }

    /// As [`Loki::start`], with the ingester's write-ahead log on (under
    /// the data directory), so that a [`Loki::kill`] loses nothing Loki
    /// acknowledged once it is [`Loki::restart`]ed.
    pub fn start_with_wal() -> Loki {
        Loki::start_with(|yaml| {
            let off = "  wal:\n    enabled: false";
            assert!(yaml.contains(off), "the template's WAL setting moved");
            yaml.replace(
                off,
                "  wal:\n    enabled: true\n    dir: /tmp/loki-data/wal",
            )
        })
    }

    /// The data directory (`common.path_prefix`).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data
    }

    /// What Loki has logged (warnings and errors, all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config_path.with_file_name("loki.log")).unwrap_or_default()
    }

    /// The process id of the running Loki.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and waits for the process to end.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL Loki");
        self.child.wait().expect("wait for Loki");
    }

    /// SIGTERM (Loki flushes its chunks), and waits up to 30 s.
    pub fn stop(&mut self) {
        // SAFETY: kill(2) on our own child with a valid signal.
        let result = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(result, 0, "SIGTERM Loki");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().expect("poll Loki").is_none() {
            assert!(Instant::now() < deadline, "Loki did not stop in 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts Loki again after [`Loki::kill`] or [`Loki::stop`], on the
    /// same config, data directory and ports; waits up to `ready` for
    /// `/ready` (a WAL replay takes time). Returns how long that took.
    pub fn restart(&mut self, ready: Duration) -> Duration {
        assert!(
            self.child.try_wait().expect("poll Loki").is_some(),
            "Loki is still running"
        );
        let started = Instant::now();
        self.child = spawn(&shared_loki().join("loki"), &self.config_path);
        self.wait_ready(ready);
        started.elapsed()
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((200, _)) = self.request("GET", "/ready", &[], &[]) {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("poll Loki") {
                panic!("Loki exited before it was ready: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "Loki did not become ready in {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One HTTP/1.1 request: (status, body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let mut stream = TcpStream::connect(self.http)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: loki\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let split = response
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no header end"))?;
        let status = std::str::from_utf8(&response[..split])
            .ok()
            .and_then(|head| head.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other("no status"))?;
        let mut body = response[split + 4..].to_vec();
        let chunked = std::str::from_utf8(&response[..split]).is_ok_and(|head| {
            head.to_ascii_lowercase()
                .contains("transfer-encoding: chunked")
        });
        if chunked {
            body = dechunk(&body);
        }
        Ok((status, body))
    }

    /// `POST /loki/api/v1/push` with `content_type`: (status, body text).
    pub fn push(&self, content_type: &str, body: &[u8]) -> (u16, String) {
        let (status, body) = self
            .request(
                "POST",
                "/loki/api/v1/push",
                &[("Content-Type", content_type)],
                body,
            )
            .expect("push to Loki");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Every entry of `selector` between `start_ns` and `end_ns`, oldest
    /// first, paged 50,000 at a time: (stream labels, timestamp, line).
    pub fn entries(
        &self,
        selector: &str,
        start_ns: u64,
        end_ns: u64,
    ) -> Vec<(serde_json::Value, u64, String)> {
        let mut found = Vec::new();
        self.scan_pages(selector, start_ns, end_ns, |page| {
            let start = found.len();
            for (labels, pairs) in page {
                for (timestamp, line) in pairs {
                    found.push((labels.clone(), *timestamp, line.to_string()));
                }
            }
            found[start..].sort_by_key(|(_, timestamp, _)| *timestamp);
        });
        found
    }

    /// Calls `each(stream labels, timestamp, line)` for every entry of
    /// `selector` between `start_ns` and `end_ns`, page by page as
    /// [`Loki::entries`] reads them, without keeping them: for selectors of
    /// millions of entries. Within a page, entries come stream by stream,
    /// each stream oldest first. Returns the number of entries.
    pub fn scan(
        &self,
        selector: &str,
        start_ns: u64,
        end_ns: u64,
        mut each: impl FnMut(&serde_json::Value, u64, &str),
    ) -> u64 {
        let mut count = 0;
        self.scan_pages(selector, start_ns, end_ns, |page| {
            for (labels, pairs) in page {
                for (timestamp, line) in pairs {
                    each(labels, *timestamp, line);
                    count += 1;
                }
            }
        });
        count
    }

    /// The paging of [`Loki::entries`] and [`Loki::scan`]: each page as
    /// (stream labels, [(timestamp, line)]) per stream.
    fn scan_pages(
        &self,
        selector: &str,
        start_ns: u64,
        end_ns: u64,
        mut each_page: impl FnMut(&[(serde_json::Value, Vec<(u64, &str)>)]),
    ) {
        const PAGE: usize = 50_000;
        let mut from = start_ns;
        loop {
            let path = format!(
                "/loki/api/v1/query_range?query={}&start={from}&end={end_ns}&limit={PAGE}&direction=forward",
                percent_encode(selector)
            );
            let (status, body) = self.request("GET", &path, &[], &[]).expect("query Loki");
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            let mut page = Vec::new();
            let mut entries = 0;
            let mut last = None;
            for stream in value["data"]["result"].as_array().expect("streams") {
                let mut pairs = Vec::new();
                for pair in stream["values"].as_array().expect("values") {
                    let timestamp: u64 = pair[0].as_str().expect("time").parse().expect("ns");
                    let line = pair[1].as_str().expect("line");
                    last = last.max(Some(timestamp));
                    pairs.push((timestamp, line));
                }
                entries += pairs.len();
                page.push((stream["stream"].clone(), pairs));
            }
            each_page(&page);
            match last {
                // The next page starts after the last time seen; entries
                // sharing that nanosecond across pages are not expected.
                Some(last) if entries == PAGE => from = last + 1,
                _ => return,
            }
        }
    }
}

/// Starts `binary` on `config`; its output goes to `loki.log` beside the
/// config (appended, so that a restart keeps the earlier run's).
fn spawn(binary: &std::path::Path, config: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_file_name("loki.log"))
        .expect("Loki's log file");
    Command::new(binary)
        .arg(format!("-config.file={}", config.display()))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start Loki")
}

impl Drop for Loki {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = body.windows(2).position(|window| window == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&body[..end])
            .ok()
            .and_then(|text| usize::from_str_radix(text.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[end + 2 + size + 2..];
    }
}

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
    _dir: tempfile::TempDir,
}

fn shared_loki() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/loki")
}

impl Loki {
    /// Starts Loki from `../shared/loki` with a copy of its config whose
    /// data directory and ports are this test's, and waits for `/ready`.
    pub fn start() -> Loki {
        let shared = shared_loki();
        let binary = shared.join("loki");
        assert!(
            binary.exists(),
            "the Loki test server is missing: {} (the repository expects ../shared/loki beside it)",
            binary.display()
        );
        let template = std::fs::read_to_string(shared.join("loki-local.yaml"))
            .expect("../shared/loki/loki-local.yaml");
        let dir = tempfile::tempdir().expect("tempdir");
        let (http_port, grpc_port) = (super::free_port(), super::free_port());
        let data = dir.path().join("data");
        let config = template
            .replace("/tmp/loki-data", &data.display().to_string())
            .replace(
                "http_listen_port: 3100",
                &format!("http_listen_port: {http_port}"),
            )
            .replace(
                "grpc_listen_port: 9096",
                &format!("grpc_listen_port: {grpc_port}"),
            )
            .replace("127.0.0.1:9096", &format!("127.0.0.1:{grpc_port}"));
        let config_path = dir.path().join("loki.yaml");
        std::fs::write(&config_path, config).expect("config");
        let child = Command::new(&binary)
            .arg(format!("-config.file={}", config_path.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Loki");
        let loki = Loki {
            child,
            http: SocketAddr::from(([127, 0, 0, 1], http_port)),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = loki.request("GET", "/ready", &[], &[]) {
                return loki;
            }
            assert!(
                Instant::now() < deadline,
                "Loki did not become ready in 30 s"
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
        let mut from = start_ns;
        loop {
            let path = format!(
                "/loki/api/v1/query_range?query={}&start={from}&end={end_ns}&limit=50000&direction=forward",
                percent_encode(selector)
            );
            let (status, body) = self.request("GET", &path, &[], &[]).expect("query Loki");
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            let mut page = Vec::new();
            for stream in value["data"]["result"].as_array().expect("streams") {
                for pair in stream["values"].as_array().expect("values") {
                    let timestamp: u64 = pair[0].as_str().expect("time").parse().expect("ns");
                    let line = pair[1].as_str().expect("line").to_string();
                    page.push((stream["stream"].clone(), timestamp, line));
                }
            }
            page.sort_by_key(|(_, timestamp, _)| *timestamp);
            let full = page.len() == 50_000;
            let last = page.last().map(|(_, timestamp, _)| *timestamp);
            found.extend(page);
            match last {
                // The next page starts after the last time seen; entries
                // sharing that nanosecond across pages are not expected.
                Some(last) if full => from = last + 1,
                _ => return found,
            }
        }
    }
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

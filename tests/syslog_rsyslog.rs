//! Debian's rsyslog as the sender: it reads 100,000 numbered lines with
//! `imfile` and forwards each with `omfwd` twice, over TCP (octet-counted)
//! to one syslog source and over UDP to another. Every message arrives at
//! each, once, labelled as rsyslog sent it.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Daemon, wait_until};

const MESSAGES: u64 = 100_000;

/// rsyslogd in the foreground with a config of its own; killed on drop.
struct Rsyslog(Child);

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_rsyslog(dir: &Path, input: &Path, tcp_port: u16, udp_port: u16) -> Rsyslog {
    let work = dir.join("rsyslog-work");
    std::fs::create_dir_all(&work).expect("work directory");
    let config = format!(
        r#"
global(workDirectory="{work}" localHostName="rsyslog-host")
module(load="imfile")
input(type="imfile" file="{input}" tag="numbered:" facility="local3" severity="info"
      freshStartTail="off" reopenOnTruncate="on")
action(type="omfwd" target="127.0.0.1" port="{tcp_port}" protocol="tcp"
       tcp_framing="octet-counted" queue.type="LinkedList" queue.size="200000")
action(type="omfwd" target="127.0.0.1" port="{udp_port}" protocol="udp"
       queue.type="LinkedList" queue.size="200000" queue.dequeueSlowdown="5")
"#,
        work = work.display(),
        input = input.display(),
    );
    let config_path = common::write_file(dir, "rsyslog.conf", &config);
    let check = Command::new("rsyslogd")
        .args(["-N1", "-f"])
        .arg(&config_path)
        .output()
        .expect("rsyslogd (Debian package rsyslog) must be installed");
    assert!(
        check.status.success(),
        "rsyslog rejects the test config: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let child = Command::new("rsyslogd")
        .args(["-n", "-i"])
        .arg(dir.join("rsyslog.pid"))
        .arg("-f")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rsyslogd");
    Rsyslog(child)
}

/// The numbers found per source id, with how often each came.
fn counts_by_source(output: &Path) -> BTreeMap<String, BTreeMap<u64, u32>> {
    let text = std::fs::read_to_string(output).unwrap_or_default();
    let mut counts: BTreeMap<String, BTreeMap<u64, u32>> = BTreeMap::new();
    for line in text.lines() {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let source = entry["labels"]["source_id"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        let Some(number) = entry["message"]
            .as_str()
            .and_then(|message| message.rsplit_once("seq="))
            .and_then(|(_, rest)| rest.get(..12))
            .and_then(|digits| digits.parse().ok())
        else {
            continue;
        };
        *counts.entry(source).or_default().entry(number).or_default() += 1;
    }
    counts
}

#[test]
fn rsyslog_forwards_100k_messages_over_tcp_and_udp_and_all_arrive_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("numbered.log");
    let mut lines = Vec::new();
    common::write_numbered_lines(&mut lines, 0, MESSAGES);
    std::fs::write(&input, &lines).expect("input");
    let output = dir.path().join("out.json");
    let (tcp_port, udp_port) = (common::free_port(), common::free_port());
    let config = format!(
        r#"
[daemon]
pin_threads = false
metrics_addr = "127.0.0.1:0"
data_dir = "{data}"

[dispatcher]
batch_timeout_ms = 20
queue_capacity = 262144

[sources.over_tcp]
type = "syslog"
tcp = "127.0.0.1:{tcp_port}"

[sources.over_udp]
type = "syslog"
udp = "127.0.0.1:{udp_port}"
recv_buffer_bytes = 4194304

{sink}
"#,
        data = dir.path().join("data").display(),
        sink = common::file_sink_table("out", &output, "json"),
    );
    let config_path = common::write_file(dir.path(), "config.toml", &config);
    let daemon = Daemon::start(&config_path);
    let _rsyslog = start_rsyslog(dir.path(), &input, tcp_port, udp_port);
    let mut counts = BTreeMap::new();
    wait_until(
        "200,000 messages from rsyslog",
        Duration::from_secs(180),
        || {
            counts = counts_by_source(&output);
            counts.values().map(BTreeMap::len).sum::<usize>() >= 2 * MESSAGES as usize
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    let counts = counts_by_source(&output);
    for source in ["over_tcp", "over_udp"] {
        let numbers = &counts[source];
        assert_eq!(numbers.len(), MESSAGES as usize, "{source}: every number");
        assert!(
            numbers.values().all(|&copies| copies == 1),
            "{source}: each once"
        );
        assert_eq!(numbers.keys().next_back(), Some(&(MESSAGES - 1)));
    }
    let text = std::fs::read_to_string(&output).expect("output");
    for line in text.lines().step_by(9973) {
        let entry: serde_json::Value = serde_json::from_str(line).expect("JSON");
        let labels = &entry["labels"];
        assert_eq!(labels["host"], "rsyslog-host", "{entry}");
        assert_eq!(labels["app"], "numbered", "{entry}");
        assert_eq!(labels["facility"], "local3", "{entry}");
        assert_eq!(labels["severity"], "info", "{entry}");
        assert!(labels.get("parse_error").is_none(), "{entry}");
    }
    daemon.stop();
}

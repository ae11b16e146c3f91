//! The stdin source: a pipe into `run` comes out byte-identical and the
//! daemon exits 0 at its end; beside another source it ends alone.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Daemon, wait_until, wait_with_timeout};

fn config(
    dir: &std::path::Path,
    extra_sources: &str,
    output: &std::path::Path,
) -> std::path::PathBuf {
    let text = format!(
        r#"
[daemon]
pin_threads = false
metrics_addr = "127.0.0.1:0"
data_dir = "{data}"

[sources.input]
type = "stdin"
labels = {{ origin = "pipe" }}
{extra_sources}

{sink}
"#,
        data = dir.join("data").display(),
        sink = common::file_sink_table("out", output, "raw"),
    );
    common::write_file(dir, "config.toml", &text)
}

#[test]
fn a_million_lines_piped_in_come_out_byte_identical_and_run_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("out.log");
    let config = config(dir.path(), "", &output);
    let mut child = Command::new(common::binary())
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    let mut input = Vec::new();
    for number in 1..=1_000_000u32 {
        writeln!(input, "{number}").expect("format");
    }
    // Like `seq 1 1000000 |`, and a last line without newline besides.
    input.extend_from_slice(b"no newline at the end");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn({
        let input = input.clone();
        move || {
            for piece in input.chunks(4093) {
                stdin.write_all(piece).expect("write to the daemon");
            }
        }
    });
    writer.join().expect("writer");
    let status = wait_with_timeout(&mut child, Duration::from_secs(120));
    assert!(status.success(), "exit {status}");
    let written = std::fs::read(&output).expect("output");
    assert_eq!(written.len(), input.len());
    assert!(written == input, "byte-identical");
}

#[test]
fn stdin_ends_alone_beside_another_source_and_check_config_warns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let followed = common::write_file(dir.path(), "app.log", "");
    let output = dir.path().join("out.log");
    let extra = format!(
        "[sources.app]\ntype = \"file\"\npaths = [\"{}\"]\n",
        followed.display()
    );
    let config = config(dir.path(), &extra, &output);
    let check = Command::new(common::binary())
        .arg("check-config")
        .arg(&config)
        .output()
        .expect("check-config");
    assert!(check.status.success(), "{check:?}");
    let warnings = String::from_utf8_lossy(&check.stdout);
    assert!(
        warnings.contains("sources.input.type") && warnings.contains("/dev/null"),
        "{warnings}"
    );
    // Standard input at its end at once, as under a service manager.
    let child = Command::new(common::binary())
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    let (daemon, _) = common::await_started(child);
    let mut daemon: Daemon = daemon;
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        daemon.child.try_wait().expect("poll").is_none(),
        "the file source goes on"
    );
    common::append_numbered_lines(&followed, 0, 10);
    wait_until("the file's lines", Duration::from_secs(20), || {
        std::fs::read_to_string(&output).is_ok_and(|text| text.lines().count() == 10)
    });
    daemon.stop();
}

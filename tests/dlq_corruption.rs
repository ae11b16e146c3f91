//! Damaged DLQ segments and reading a DLQ while the daemon writes it.
//!
//! A damaged segment header or a corrupt frame must never hide the intact
//! records of a segment: they are recovered by a scan that resynchronises on
//! the next frame whose length and CRC32C check out, they are listed, dumped
//! and replayed, and a segment is deleted only once every record recovered
//! from it was acknowledged. `dlq list` and `dlq dump` read segments without
//! the writer's lock, so they work while the daemon runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use log_capturer::config::Config;
use log_capturer::dlq::record::{Reason, Record, encode_frame};
use log_capturer::dlq::segment::{list_segments, scan_frames};
use log_capturer::dlq::{DlqSettings, DlqWriter};
use log_capturer::pipeline::replay::replay;

const SEGMENT_BYTES: usize = 65536;

/// A config whose only sink, `out`, is a file at `output`; its DLQ lives
/// under `dir/data`. Written to `dir/<name>`.
fn write_config(dir: &Path, name: &str, output: &Path) -> (PathBuf, Config) {
    let text = format!(
        "[daemon]\ndata_dir = \"{}\"\n[dlq]\nsegment_bytes = {SEGMENT_BYTES}\nauto_replay = false\n[sources.app]\ntype = \"file\"\npaths = [\"/nonexistent\"]\n[sinks.out]\ntype = \"file\"\npath = \"{}\"\n",
        dir.join("data").display(),
        output.display()
    );
    let path = common::write_file(dir, name, &text);
    let config = Config::from_toml(&text, &path).expect("config");
    (path, config)
}

fn open_writer(config: &Config) -> DlqWriter {
    let settings = DlqSettings {
        dir: config.dlq_dir(),
        segment_bytes: SEGMENT_BYTES,
        max_bytes: 1 << 30,
        policy: config.dlq.policy,
    };
    DlqWriter::open("out", &settings).expect("open the DLQ")
}

fn append(writer: &mut DlqWriter, first: u32, count: u32) {
    for number in first..first + count {
        let message = format!("record {number:06} {}", "m".repeat(40));
        writer
            .append(&Record {
                timestamp_ns: 1,
                attempts: 2,
                reason: Reason::AttemptsExhausted,
                terminated: true,
                sink: "out",
                labels: vec![("file", "/var/log/app.log")],
                message: message.as_bytes(),
            })
            .expect("append");
    }
}

/// Writes `count` records for sink `out`; returns the segment paths.
fn write_records(config: &Config, count: u32) -> Vec<PathBuf> {
    let mut writer = open_writer(config);
    append(&mut writer, 0, count);
    drop(writer);
    segments(config)
}

fn segments(config: &Config) -> Vec<PathBuf> {
    list_segments(&config.dlq_dir().join("out"))
        .expect("segments")
        .into_iter()
        .map(|(_, path)| path)
        .collect()
}

/// Records per segment, oldest first, as the library lists them.
fn listed_records(config: &Config) -> Vec<u64> {
    log_capturer::dlq::list(&config.dlq_dir().join("out"))
        .expect("list")
        .iter()
        .map(|(_, _, summary)| summary.records)
        .collect()
}

/// Runs `log-capturer dlq <args> --config <config>`: (exit code, stdout,
/// stderr).
fn dlq_command(args: &[&str], config: &Path) -> (i32, String, String) {
    let output = Command::new(common::binary())
        .arg("dlq")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run log-capturer dlq");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The record numbers in a replay output or a text dump, in order.
fn record_numbers(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|line| {
            let at = line.find("record ")? + "record ".len();
            line.get(at..at + 6)?.parse().ok()
        })
        .collect()
}

fn flip(path: &Path, offset: usize, mask: u8) {
    let mut bytes = std::fs::read(path).expect("read segment");
    bytes[offset] ^= mask;
    std::fs::write(path, &bytes).expect("write segment");
}

/// Goal: a segment whose header is damaged is reported, counted and scanned
/// anyway. Method: 1,000 records over two segments; the first segment's
/// magic is overwritten; `dlq list` must exit 0 and name the file and the
/// damage, `dlq dump` must print every record, the daemon's start-up scan
/// must count the damage and every record, and a replay must deliver every
/// record and delete both segments.
#[test]
fn damaged_header_is_reported_and_its_records_recovered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("replayed.log");
    let (config_path, config) = write_config(dir.path(), "dlq.toml", &output);
    let paths = write_records(&config, 1000);
    assert_eq!(paths.len(), 2, "records span two segments");
    let before = listed_records(&config);
    std::fs::write(&paths[0], {
        let mut bytes = std::fs::read(&paths[0]).expect("read");
        bytes[..8].copy_from_slice(b"garbage!");
        bytes
    })
    .expect("damage the header");

    let (code, stdout, stderr) = dlq_command(&["list"], &config_path);
    println!("{stdout}{stderr}");
    assert_eq!(code, 0, "dlq list exits 0: {stderr}");
    let name = paths[0].file_name().expect("name").to_string_lossy();
    let note = stdout
        .lines()
        .find(|line| line.contains(&*name))
        .unwrap_or_else(|| panic!("a line names {name}: {stdout}"));
    assert!(note.contains("header"), "the line says why: {note}");
    assert_eq!(listed_records(&config), before, "records still listed");

    let (code, stdout, stderr) = dlq_command(&["dump"], &config_path);
    assert_eq!(code, 0, "dlq dump exits 0: {stderr}");
    assert_eq!(record_numbers(&stdout), (0..1000).collect::<Vec<_>>());

    let writer = open_writer(&config);
    let metrics = writer.metrics();
    drop(writer);
    assert_eq!(metrics.entries.get(), 1000, "start-up counts every record");
    assert_eq!(metrics.corrupt.get(), 1, "start-up counts the header");

    let report = replay(&config, "out", &mut |_, _| {}).expect("replay");
    assert_eq!(report.records_delivered, 1000, "{report:?}");
    let replayed = std::fs::read_to_string(&output).expect("output");
    assert_eq!(record_numbers(&replayed), (0..1000).collect::<Vec<_>>());
    assert!(segments(&config).is_empty(), "both segments replayed");
}

/// Goal: a flipped byte in the first record's length field hides no other
/// record, and replay keeps the segment while recovered records are not
/// acknowledged. Method: for each byte of the length field, a segment full
/// of records has that byte flipped; the listing, the dump and a replay
/// must see every other record; a replay into `/dev/full` (every write
/// fails) must keep the segment; a replay into a file must deliver every
/// other record once.
#[test]
fn flipped_length_byte_hides_no_intact_record() {
    for byte in 0..4 {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = dir.path().join("replayed.log");
        let (config_path, config) = write_config(dir.path(), "dlq.toml", &output);
        let (_, full_config) = write_config(dir.path(), "full.toml", Path::new("/dev/full"));
        let paths = write_records(&config, 1000);
        let in_first = listed_records(&config)[0] as u32;
        flip(&paths[0], 64 + byte, 0xff);

        let counts = log_capturer::dlq::list(&config.dlq_dir().join("out")).expect("list");
        let (_, _, first) = &counts[0];
        assert_eq!(
            (first.records, first.corrupt),
            (u64::from(in_first) - 1, 1),
            "length byte {byte}: {first:?}"
        );
        let (code, stdout, stderr) = dlq_command(&["dump"], &config_path);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(record_numbers(&stdout), (1..1000).collect::<Vec<_>>());

        let report = replay(&full_config, "out", &mut |_, _| {}).expect("replay");
        assert!(report.records_failed > 0, "{report:?}");
        assert!(paths[0].exists(), "unacknowledged records keep the segment");

        let report = replay(&config, "out", &mut |_, _| {}).expect("replay");
        assert_eq!(
            (report.records_delivered, report.records_failed),
            (999, 0),
            "length byte {byte}: {report:?}"
        );
        let replayed = std::fs::read_to_string(&output).expect("output");
        assert_eq!(record_numbers(&replayed), (1..1000).collect::<Vec<_>>());
        assert!(segments(&config).is_empty());
    }
}

/// The frames of a small segment body: (frames, each frame's byte range).
fn small_segment() -> (Vec<u8>, Vec<std::ops::Range<usize>>) {
    let mut body = Vec::new();
    let mut ranges = Vec::new();
    let mut frame = Vec::new();
    for number in 0..12u32 {
        let message = format!("record {number:06} {}", "x".repeat(number as usize * 7));
        let labels = if number % 3 == 0 {
            vec![]
        } else {
            vec![("file", "/var/log/app.log")]
        };
        encode_frame(
            &mut frame,
            &Record {
                timestamp_ns: 1_700_000_000_000_000_000 + u64::from(number),
                attempts: number,
                reason: Reason::ALL[number as usize % 4],
                terminated: number % 2 == 0,
                sink: "out",
                labels,
                message: message.as_bytes(),
            },
        );
        ranges.push(body.len()..body.len() + frame.len());
        body.extend_from_slice(&frame);
    }
    body.resize(body.len() + 300, 0);
    (body, ranges)
}

/// Goal: whatever single byte of a segment is damaged, the scan never
/// panics, recovers every record whose frame the damage did not touch, in
/// order, and returns no record that was not written. Method: a body of 12
/// frames (with and without labels) and a zero tail; every byte position is
/// XORed with 0xff, 0x01, 0x80 and with its own value (zeroing it).
#[test]
fn every_single_byte_flip_recovers_every_untouched_record() {
    let (body, ranges) = small_segment();
    for position in 0..body.len() {
        let original = body[position];
        for mask in [0xff, 0x01, 0x80, original] {
            if mask == 0 {
                continue;
            }
            let mut damaged = body.clone();
            damaged[position] ^= mask;
            let mut seen = Vec::new();
            let summary = scan_frames(&damaged, &mut |records| {
                seen.extend(records.iter().map(|record| record.attempts))
            });
            let untouched: Vec<u32> = (0..ranges.len() as u32)
                .filter(|&number| !ranges[number as usize].contains(&position))
                .collect();
            assert_eq!(
                seen, untouched,
                "byte {position} ^ {mask:#04x}: {summary:?}"
            );
            assert_eq!(summary.records, seen.len() as u64);
            if untouched.len() < ranges.len() {
                assert!(summary.corrupt >= 1, "byte {position}: {summary:?}");
            }
        }
    }
}

/// Goal: `dlq list` and `dlq dump` work while a writer holds the segment it
/// appends to. Method: 1,000 records, the second segment still open (and
/// locked) by a writer in this process; `dlq list` and `dlq dump` run as
/// child processes and must exit 0, the dump printing every record written
/// so far; then 500 more records and a second dump.
#[test]
fn list_and_dump_run_while_a_writer_holds_the_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("replayed.log");
    let (config_path, config) = write_config(dir.path(), "dlq.toml", &output);
    let mut writer = open_writer(&config);
    append(&mut writer, 0, 1000);
    assert_eq!(segments(&config).len(), 2, "one sealed, one being written");

    let (code, stdout, stderr) = dlq_command(&["list"], &config_path);
    println!("{stdout}{stderr}");
    assert_eq!(
        code, 0,
        "dlq list exits 0 while the segment is locked: {stderr}"
    );
    let (code, stdout, stderr) = dlq_command(&["dump"], &config_path);
    assert_eq!(
        code, 0,
        "dlq dump exits 0 while the segment is locked: {stderr}"
    );
    assert_eq!(record_numbers(&stdout), (0..1000).collect::<Vec<_>>());

    append(&mut writer, 1000, 500);
    let (code, stdout, stderr) = dlq_command(&["dump", "--json"], &config_path);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(record_numbers(&stdout), (0..1500).collect::<Vec<_>>());
    drop(writer);
}

/// Scans the segment at `path` unlocked: (records, corrupt regions, time).
fn timed_scan(path: &Path) -> (u64, u64, std::time::Duration) {
    let started = std::time::Instant::now();
    let summary = log_capturer::dlq::segment::ReadableSegment::open_unlocked(path)
        .expect("open")
        .scan(|_| {})
        .expect("scan");
    (summary.records, summary.corrupt, started.elapsed())
}

/// Goal: scanning a damaged 64 MiB segment costs about what scanning an
/// intact one does, never minutes. Method: one segment of 64 MiB filled
/// with records, scanned intact, with its first length flipped, with a byte
/// flipped every 4 KiB, with its body overwritten by pseudo-random bytes,
/// and emptied (zeroes only). Each scan must recover what it should and
/// finish within 30 s (an intact scan takes well under a second).
#[test]
fn damaged_64_mib_segment_scans_in_linear_time() {
    const BIG_SEGMENT_BYTES: usize = 64 * 1024 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = DlqSettings {
        dir: dir.path().to_path_buf(),
        segment_bytes: BIG_SEGMENT_BYTES,
        max_bytes: 1 << 30,
        policy: log_capturer::config::DlqPolicy::DropNew,
    };
    let mut writer = DlqWriter::open("out", &settings).expect("open");
    let mut written = 0;
    while list_segments(&dir.path().join("out"))
        .expect("segments")
        .len()
        < 2
    {
        append(&mut writer, written, 1000);
        written += 1000;
    }
    drop(writer);
    let path = list_segments(&dir.path().join("out")).expect("segments")[0]
        .1
        .clone();
    let intact = std::fs::read(&path).expect("read");
    let (records, corrupt, took) = timed_scan(&path);
    println!("intact: {records} records, {corrupt} corrupt, {took:?}");
    assert_eq!(corrupt, 0);
    let limit = std::time::Duration::from_secs(30);

    let mut bytes = intact.clone();
    bytes[64 + 3] ^= 0xff;
    std::fs::write(&path, &bytes).expect("write");
    let (recovered, corrupt, took) = timed_scan(&path);
    println!("first length flipped: {recovered} records, {corrupt} corrupt, {took:?}");
    assert_eq!((recovered, corrupt), (records - 1, 1));
    assert!(took < limit);

    let mut bytes = intact.clone();
    let mut flips = 0;
    for at in (4096..bytes.len()).step_by(4096) {
        bytes[at] ^= 0x5a;
        flips += 1;
    }
    std::fs::write(&path, &bytes).expect("write");
    let (recovered, corrupt, took) = timed_scan(&path);
    println!("{flips} flips: {recovered} records, {corrupt} corrupt, {took:?}");
    assert!(
        recovered >= records - flips,
        "each flip costs one record at most"
    );
    assert!(took < limit);

    let mut bytes = intact.clone();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for byte in &mut bytes[64..] {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    std::fs::write(&path, &bytes).expect("write");
    let (recovered, corrupt, took) = timed_scan(&path);
    println!("random body: {recovered} records, {corrupt} corrupt, {took:?}");
    assert_eq!(recovered, 0);
    assert!(took < limit);

    let mut bytes = intact.clone();
    bytes[64..].fill(0);
    std::fs::write(&path, &bytes).expect("write");
    let (recovered, corrupt, took) = timed_scan(&path);
    println!("empty: {recovered} records, {corrupt} corrupt, {took:?}");
    assert_eq!((recovered, corrupt), (0, 0));
    assert!(took < limit);

    // A first record crafted to hold 32,768 plausible frame prefixes, each
    // claiming 60 MiB, with its own length flipped: checked directly, each
    // would cost a 60 MiB checksum.
    std::fs::remove_dir_all(dir.path().join("out")).expect("remove the segments");
    let mut message = Vec::new();
    let claimed_bytes = 60u32 * 1024 * 1024;
    while message.len() < 1024 * 1024 {
        message.extend_from_slice(&claimed_bytes.to_le_bytes());
        message.extend_from_slice(&[0xef, 0xbe, 0xad, 0xde, 1, 1, 0, 0]);
        message.extend_from_slice(&[0; 16]);
        message.extend_from_slice(&(claimed_bytes - 24).to_le_bytes());
    }
    let mut writer = DlqWriter::open("out", &settings).expect("open");
    writer
        .append(&Record {
            timestamp_ns: 1,
            attempts: 1,
            reason: Reason::Permanent,
            terminated: false,
            sink: "out",
            labels: vec![],
            message: &message,
        })
        .expect("append");
    append(&mut writer, 0, 100_000);
    drop(writer);
    let path = list_segments(&dir.path().join("out")).expect("segments")[0]
        .1
        .clone();
    flip(&path, 64, 0x01);
    let (recovered, corrupt, took) = timed_scan(&path);
    println!("crafted first record: {recovered} records, {corrupt} corrupt, {took:?}");
    assert_eq!((recovered, corrupt), (100_000, 1));
    assert!(took < limit);
}

//! Damaged DLQ segments and reading a DLQ while the daemon writes it.
//!
//! A damaged segment header or a corrupt frame must never hide the intact
//! records of a segment: they are recovered by a scan that resynchronises on
//! the next frame whose length and CRC32C check out, they are listed, dumped
//! and replayed, and a segment is deleted only once every record recovered
//! from it was acknowledged. `dlq list` and `dlq dump` read segments without
//! the writer's lock, so they work while the daemon runs.
//!
//! Each promise is checked on both formats: v1 segments (one record per
//! frame, written here by the v1 writer an upgraded daemon's DLQ was made
//! with) and v2 segments (compressed blocks, what the daemon writes), where
//! a damaged block costs that block's records and no others.

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

/// The segment formats a DLQ may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Written by earlier builds: one record per frame.
    V1,
    /// Compressed blocks.
    V2,
}

const FORMATS: [Format; 2] = [Format::V1, Format::V2];

fn open_writer_as(config: &Config, format: Format) -> DlqWriter {
    let settings = DlqSettings {
        dir: config.dlq_dir(),
        segment_bytes: SEGMENT_BYTES,
        max_bytes: 1 << 30,
        policy: config.dlq.policy,
    };
    match format {
        Format::V1 => DlqWriter::open_v1("out", &settings).expect("open the DLQ"),
        Format::V2 => DlqWriter::open("out", &settings).expect("open the DLQ"),
    }
}

/// 48 pseudo-random bytes of `number`, as 96 hexadecimal digits: what
/// compression cannot remove, so that v2 records fill segments too.
fn noise(number: u32) -> String {
    let mut state = u64::from(number).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..6)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            format!("{state:016x}")
        })
        .collect()
}

fn append(writer: &mut DlqWriter, first: u32, count: u32) {
    append_as(writer, first, count, Format::V1);
}

/// Appends records `first..first + count`; v2 records carry noise, so
/// that 1,000 of them fill more than one segment as 1,000 v1 records do.
fn append_as(writer: &mut DlqWriter, first: u32, count: u32, format: Format) {
    for number in first..first + count {
        let message = match format {
            Format::V1 => format!("record {number:06} {}", "m".repeat(40)),
            Format::V2 => format!("record {number:06} {}", noise(number)),
        };
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

/// Writes `count` records for sink `out` as v1 segments; returns the
/// segment paths.
fn write_records(config: &Config, count: u32) -> Vec<PathBuf> {
    write_records_as(config, count, Format::V1)
}

fn write_records_as(config: &Config, count: u32, format: Format) -> Vec<PathBuf> {
    let mut writer = open_writer_as(config, format);
    append_as(&mut writer, 0, count, format);
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
    for format in FORMATS {
        damaged_header_case(format);
    }
}

fn damaged_header_case(format: Format) {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("replayed.log");
    let (config_path, config) = write_config(dir.path(), "dlq.toml", &output);
    let paths = write_records_as(&config, 1000, format);
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

    let writer = open_writer_as(&config, format);
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
    for format in FORMATS {
        list_and_dump_case(format);
    }
}

fn list_and_dump_case(format: Format) {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("replayed.log");
    let (config_path, config) = write_config(dir.path(), "dlq.toml", &output);
    let mut writer = open_writer_as(&config, format);
    append_as(&mut writer, 0, 1000, format);
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

    append_as(&mut writer, 1000, 500, format);
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
    let mut writer = DlqWriter::open_v1("out", &settings).expect("open");
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
    let mut writer = DlqWriter::open_v1("out", &settings).expect("open");
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

/// A v2 segment body of `blocks` blocks of 5 records each (labels that
/// change from block to block, and within blocks), and a zero tail:
/// (body, each block's byte range).
fn small_v2_body(blocks: u32) -> (Vec<u8>, Vec<std::ops::Range<usize>>) {
    use log_capturer::dlq::block::BlockBuilder;
    let mut builder = BlockBuilder::new();
    let mut body = Vec::new();
    let mut ranges = Vec::new();
    let mut frame = Vec::new();
    let files = [
        "/var/log/opensips.log",
        "/var/log/mysql/error.log",
        "/tmp/new.log",
    ];
    for block in 0..blocks {
        for index in 0..5u32 {
            let number = block * 5 + index;
            let message = format!("record {number:06} {}", "x".repeat(number as usize * 3));
            let labels = match number % 3 {
                0 => vec![],
                _ => vec![
                    ("file", files[(number as usize / 4) % 3]),
                    ("host", "sbc01"),
                ],
            };
            builder.add(&Record {
                timestamp_ns: 1_700_000_000_000_000_000 + u64::from(number) * 1000,
                attempts: number,
                reason: Reason::ALL[number as usize % 4],
                terminated: number % 2 == 0,
                sink: "out",
                labels,
                message: message.as_bytes(),
            });
        }
        builder.finish(&mut frame);
        ranges.push(body.len()..body.len() + frame.len());
        body.extend_from_slice(&frame);
    }
    body.resize(body.len() + 300, 0);
    (body, ranges)
}

/// Goal: whatever single byte of a v2 segment is damaged, the scan never
/// panics, recovers every record of every block the damage did not touch,
/// in order, and returns no record that was not written (per-block
/// resynchronisation). Method: a body of 6 blocks of 5 records and a zero
/// tail; every byte XORed with 0xff, 0x01, 0x80 and its own value.
#[test]
fn every_single_byte_flip_in_a_v2_body_costs_one_block_at_most() {
    use log_capturer::dlq::segment::scan_blocks;
    let (body, ranges) = small_v2_body(6);
    let mut intact = Vec::new();
    scan_blocks(&body, &mut |records| {
        intact.extend(records.iter().map(|record| format!("{record:?}")))
    });
    assert_eq!(intact.len(), 30);
    for position in 0..body.len() {
        let original = body[position];
        for mask in [0xff, 0x01, 0x80, original] {
            if mask == 0 {
                continue;
            }
            let mut damaged = body.clone();
            damaged[position] ^= mask;
            let mut seen = Vec::new();
            let summary = scan_blocks(&damaged, &mut |records| {
                seen.extend(records.iter().map(|record| format!("{record:?}")))
            });
            let untouched: Vec<String> = (0..ranges.len())
                .filter(|&block| !ranges[block].contains(&position))
                .flat_map(|block| intact[block * 5..block * 5 + 5].to_vec())
                .collect();
            assert_eq!(
                seen, untouched,
                "byte {position} ^ {mask:#04x}: {summary:?}"
            );
            assert_eq!(summary.records, seen.len() as u64);
            if untouched.len() < intact.len() {
                assert!(summary.corrupt >= 1, "byte {position}: {summary:?}");
            }
        }
    }
}

/// The record count of the v2 block at `offset` of a segment file.
fn block_records(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset + 12..offset + 16].try_into().expect("4 bytes"))
}

/// The offsets of the blocks of a v2 segment file, walking the lengths.
fn block_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 64;
    loop {
        let length = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        if length == 0 {
            return offsets;
        }
        offsets.push(at);
        at += 8 + length;
    }
}

/// Goal: a flipped byte in a v2 block's length hides that block's records
/// only, and replay keeps the segment while recovered records are not
/// acknowledged. Method: for each byte of the first block's length, 1,000
/// records over two segments; the listing, dump and replay must see every
/// record of the other blocks; a replay into `/dev/full` keeps the segment,
/// a replay into a file delivers them once.
#[test]
fn flipped_block_length_byte_hides_only_that_block() {
    for byte in 0..4 {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = dir.path().join("replayed.log");
        let (config_path, config) = write_config(dir.path(), "dlq.toml", &output);
        let (_, full_config) = write_config(dir.path(), "full.toml", Path::new("/dev/full"));
        let paths = write_records_as(&config, 1000, Format::V2);
        assert_eq!(paths.len(), 2, "records span two segments");
        let in_first = listed_records(&config)[0] as u32;
        let lost = block_records(&std::fs::read(&paths[0]).expect("read"), 64);
        assert!(lost > 1 && lost < in_first, "{lost} of {in_first}");
        flip(&paths[0], 64 + byte, 0xff);

        let counts = log_capturer::dlq::list(&config.dlq_dir().join("out")).expect("list");
        let (_, _, first) = &counts[0];
        assert_eq!(
            (first.records, first.corrupt),
            (u64::from(in_first - lost), 1),
            "length byte {byte}: {first:?}"
        );
        let (code, stdout, stderr) = dlq_command(&["dump"], &config_path);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(record_numbers(&stdout), (lost..1000).collect::<Vec<_>>());

        let report = replay(&full_config, "out", &mut |_, _| {}).expect("replay");
        assert!(report.records_failed > 0, "{report:?}");
        assert!(paths[0].exists(), "unacknowledged records keep the segment");

        let report = replay(&config, "out", &mut |_, _| {}).expect("replay");
        assert_eq!(
            (report.records_delivered, report.records_failed),
            (u64::from(1000 - lost), 0),
            "length byte {byte}: {report:?}"
        );
        let replayed = std::fs::read_to_string(&output).expect("output");
        assert_eq!(record_numbers(&replayed), (lost..1000).collect::<Vec<_>>());
        assert!(segments(&config).is_empty());
    }
}

/// Goal: a flipped byte in every other block of a sealed v2 segment costs
/// exactly those blocks, and the start-up count, which trusts the seal
/// trailer, still counts what replay will find once it scans. Method:
/// 3,000 records; a byte in the middle of every second block is flipped;
/// the scan must return the records of the others, in order.
#[test]
fn a_flipped_byte_in_every_other_block_costs_those_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("replayed.log");
    let (_, config) = write_config(dir.path(), "dlq.toml", &output);
    let paths = write_records_as(&config, 3000, Format::V2);
    let mut expected = Vec::new();
    let mut first = 0u32;
    let mut blocks = 0;
    for path in &paths {
        let mut bytes = std::fs::read(path).expect("read");
        let offsets = block_offsets(&bytes);
        blocks += offsets.len();
        for (index, &offset) in offsets.iter().enumerate() {
            let records = block_records(&bytes, offset);
            if index % 2 == 1 {
                let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4"));
                bytes[offset + 8 + length as usize / 2] ^= 0x20;
            } else {
                expected.extend(first..first + records);
            }
            first += records;
        }
        std::fs::write(path, &bytes).expect("write");
    }
    assert_eq!(
        first, 3000,
        "every record is in a block of a sealed segment"
    );
    assert!(blocks >= 8, "{blocks} blocks");
    let mut seen = Vec::new();
    for path in &paths {
        log_capturer::dlq::segment::ReadableSegment::open_unlocked(path)
            .expect("open")
            .scan(|record| {
                let text = String::from_utf8_lossy(record.message);
                seen.extend(record_numbers(&text));
            })
            .expect("scan");
    }
    assert_eq!(seen, expected);
}

/// Goal: a crash at any step of closing a block loses no record that was
/// counted as stored and repeats none. Method: records are appended and
/// the writer is abandoned without sealing (as `kill -9` leaves it), in
/// three states: records only in the open block; a block written but the
/// open block not yet cleared (its area is put back as it was); a block
/// whose length never reached the page (zeroed) with its records still in
/// the open block. Each time the segment must yield every record once, and
/// a new writer's start-up must count them.
#[test]
fn a_crash_while_closing_a_block_loses_and_repeats_nothing() {
    use log_capturer::dlq::header::Layout;
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("replayed.log");
    let (_, config) = write_config(dir.path(), "dlq.toml", &output);
    let layout = Layout::of(SEGMENT_BYTES as u64).expect("layout");
    let area = layout.staging_start..layout.trailer_start;
    let path = |config: &Config| segments(config)[0].clone();
    let scan_numbers = |path: &Path| {
        let mut seen = Vec::new();
        let summary = log_capturer::dlq::segment::ReadableSegment::open_unlocked(path)
            .expect("open")
            .scan(|record| seen.extend(record_numbers(&String::from_utf8_lossy(record.message))))
            .expect("scan");
        (seen, summary)
    };

    // Records only in the open block.
    let mut writer = open_writer_as(&config, Format::V2);
    append_as(&mut writer, 0, 20, Format::V2);
    std::mem::forget(writer);
    let segment = path(&config);
    let (seen, summary) = scan_numbers(&segment);
    assert_eq!(seen, (0..20).collect::<Vec<_>>(), "{summary:?}");
    assert_eq!(summary.corrupt, 0);

    // The open block as it was before the block that holds its records
    // was written: the block must win, without duplicates.
    let staged = std::fs::read(&segment).expect("read")[area.clone()].to_vec();
    std::fs::remove_dir_all(config.dlq_dir()).expect("reset");
    let mut writer = open_writer_as(&config, Format::V2);
    append_as(&mut writer, 0, 20, Format::V2);
    let segment = path(&config);
    let staged_again = std::fs::read(&segment).expect("read")[area.clone()].to_vec();
    assert_eq!(
        staged_again, staged,
        "the same records stage the same bytes"
    );
    append_as(&mut writer, 20, 400, Format::V2);
    std::mem::forget(writer);
    let mut bytes = std::fs::read(&segment).expect("read");
    let first_block = block_offsets(&bytes)[0];
    assert_eq!(block_records(&bytes, first_block), {
        // The first block closed when the open block was full.
        let records = block_records(&bytes, first_block);
        assert!(records > 20);
        records
    });
    let current_area = bytes[area.clone()].to_vec();
    bytes[area.clone()].copy_from_slice(&staged);
    std::fs::write(&segment, &bytes).expect("write");
    let (seen, summary) = scan_numbers(&segment);
    let staged_now = {
        let mut numbers = Vec::new();
        let _ = log_capturer::dlq::segment::scan_frames(&current_area[16..], &mut |records| {
            numbers.extend(
                records
                    .iter()
                    .flat_map(|record| record_numbers(&String::from_utf8_lossy(record.message))),
            )
        });
        numbers
    };
    assert!(!staged_now.is_empty());
    let in_blocks = 420 - staged_now.len() as u32;
    assert_eq!(
        seen,
        (0..in_blocks).collect::<Vec<_>>(),
        "the stale open block is ignored and the live one was overwritten: {summary:?}"
    );

    // The first block's length zeroed, its records still in the open
    // block: the open block as it was before the append that closed it.
    std::fs::remove_dir_all(config.dlq_dir()).expect("reset");
    let mut writer = open_writer_as(&config, Format::V2);
    append_as(&mut writer, 0, 1, Format::V2);
    let segment = path(&config);
    let mut number = 1;
    let (segment, staged, closed) = loop {
        let before = std::fs::read(&segment).expect("read");
        append_as(&mut writer, number, 1, Format::V2);
        number += 1;
        let after = std::fs::read(&segment).expect("read");
        if !block_offsets(&after).is_empty() {
            break (segment, before[area.clone()].to_vec(), after);
        }
    };
    std::mem::forget(writer);
    let mut bytes = closed;
    let offsets = block_offsets(&bytes);
    assert_eq!(offsets.len(), 1, "one block closed");
    let in_block = block_records(&bytes, offsets[0]);
    assert_eq!(in_block, number - 1, "the block holds what was staged");
    bytes[offsets[0]..offsets[0] + 4].fill(0);
    bytes[area.clone()].copy_from_slice(&staged);
    std::fs::write(&segment, &bytes).expect("write");
    let (seen, summary) = scan_numbers(&segment);
    assert_eq!(seen, (0..in_block).collect::<Vec<_>>(), "{summary:?}");
    assert!(summary.corrupt <= 1, "at most the torn block: {summary:?}");
    let writer = open_writer_as(&config, Format::V2);
    assert_eq!(
        writer.metrics().entries.get(),
        u64::from(in_block),
        "start-up counts them"
    );
}

/// Goal: the v2 writer stores lines of every size, labels first seen in
/// the middle of a segment, and reads them back exactly. Method: 1-byte,
/// empty, 1 MiB and binary messages between ordinary ones, labels that
/// change every few records (new files, new hosts), in 4 MiB segments;
/// the scan must return every record as written; a sealed segment's
/// trailer must agree with the scan.
#[test]
fn v2_stores_every_shape_of_line_and_label() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = DlqSettings {
        dir: dir.path().to_path_buf(),
        segment_bytes: 4 << 20,
        max_bytes: 1 << 30,
        policy: log_capturer::config::DlqPolicy::DropNew,
    };
    let big: Vec<u8> = (0..(1 << 20))
        .map(|index| (index * 7 % 251) as u8)
        .collect();
    let mut expected = Vec::new();
    let mut writer = DlqWriter::open("out", &settings).expect("open");
    for number in 0..5000u32 {
        let message: Vec<u8> = match number % 997 {
            1 => b"x".to_vec(),
            2 => Vec::new(),
            3 => big.clone(),
            4 => vec![0, 255, 10, 13, 0],
            _ => format!("line {number} {}", noise(number)).into_bytes(),
        };
        let file = format!("/var/log/app-{}.log", number / 700);
        let host = format!("host-{}", number / 1300);
        let labels: Vec<(String, String)> = if number % 5 == 0 {
            vec![]
        } else {
            vec![("file".into(), file), ("host".into(), host)]
        };
        expected.push((number, labels.clone(), message.clone()));
        let labels: Vec<(&str, &str)> = labels
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        writer
            .append(&Record {
                timestamp_ns: 1_700_000_000_000_000_000 - u64::from(number % 3) * 1000,
                attempts: number,
                reason: Reason::RetryQueueFull,
                terminated: number % 2 == 1,
                sink: "out",
                labels,
                message: &message,
            })
            .expect("append");
    }
    drop(writer);
    let mut seen = Vec::new();
    for (_, path) in list_segments(&dir.path().join("out")).expect("segments") {
        let mut segment =
            log_capturer::dlq::segment::ReadableSegment::open_unlocked(&path).expect("open");
        let trailer = segment.trailer().expect("a sealed segment has a trailer");
        let summary = segment
            .scan(|record| {
                let labels: Vec<(String, String)> = record
                    .labels
                    .iter()
                    .map(|(key, value)| (key.to_string(), value.to_string()))
                    .collect();
                assert_eq!(record.terminated, record.attempts % 2 == 1);
                seen.push((record.attempts, labels, record.message.to_vec()));
            })
            .expect("scan");
        assert_eq!(summary.corrupt, 0);
        assert_eq!(
            (trailer.records, trailer.used_bytes, trailer.input_bytes),
            (summary.records, summary.used_bytes, summary.input_bytes)
        );
    }
    assert_eq!(seen.len(), expected.len());
    assert!(seen == expected, "every record read back as written");
}

/// Goal: a daemon upgraded with v1 segments on disk lists, dumps and
/// replays them with its own v2 segments. Method: 1,000 records in v1
/// segments from the v1 writer, then 1,000 from the v2 writer; `dlq list`
/// shows every segment, `dlq dump` and a replay give the 2,000 records in
/// order, and every segment is deleted.
#[test]
fn v1_segments_are_read_and_replayed_after_an_upgrade() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("replayed.log");
    let (config_path, config) = write_config(dir.path(), "dlq.toml", &output);
    let mut old = open_writer_as(&config, Format::V1);
    append_as(&mut old, 0, 1000, Format::V1);
    drop(old);
    let mut new = open_writer_as(&config, Format::V2);
    assert_eq!(
        new.metrics().entries.get(),
        1000,
        "start-up counts the v1 records"
    );
    append_as(&mut new, 1000, 1000, Format::V2);
    drop(new);
    let paths = segments(&config);
    assert!(paths.len() >= 4, "{} segments", paths.len());
    let (code, stdout, stderr) = dlq_command(&["list"], &config_path);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(" 2000"), "{stdout}");
    let formats: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("out ") && !line.contains("total"))
        .filter_map(|line| line.split_whitespace().last())
        .collect();
    assert!(
        formats.contains(&"v1") && formats.contains(&"v2"),
        "{stdout}"
    );
    let (code, stdout, stderr) = dlq_command(&["dump"], &config_path);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(record_numbers(&stdout), (0..2000).collect::<Vec<_>>());
    let report = replay(&config, "out", &mut |_, _| {}).expect("replay");
    assert_eq!(report.records_delivered, 2000, "{report:?}");
    let replayed = std::fs::read_to_string(&output).expect("output");
    assert_eq!(record_numbers(&replayed), (0..2000).collect::<Vec<_>>());
    assert!(segments(&config).is_empty());
}

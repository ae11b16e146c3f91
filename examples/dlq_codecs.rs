//! Compares block codecs for DLQ segments on a corpus of log lines: for
//! each codec, the bytes per line and the compression speed when the lines
//! are cut into blocks of a given input size.
//!
//!     python3 perf/voip_lines.py /tmp/random.log 200000
//!     cargo run --release --example dlq_codecs -- /tmp/random.log [BLOCK_KIB...]

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: dlq_codecs CORPUS [BLOCK_KIB...]");
    let corpus = std::fs::read(&path).expect("read the corpus");
    let mut block_sizes: Vec<usize> = args.map(|arg| arg.parse().expect("KiB")).collect();
    if block_sizes.is_empty() {
        block_sizes = vec![16, 64, 128];
    }
    let lines = corpus.iter().filter(|&&byte| byte == b'\n').count();
    println!(
        "{path}: {lines} lines, {:.1} bytes/line",
        corpus.len() as f64 / lines as f64
    );
    for block_kib in block_sizes {
        let blocks = cut(&corpus, block_kib * 1024);
        for codec in ["lz4_flex", "zstd-1", "zstd1", "zstd3"] {
            let mut compressor = zstd::bulk::Compressor::new(level(codec)).expect("zstd");
            let mut out = Vec::new();
            let started = Instant::now();
            let mut total = 0usize;
            for block in &blocks {
                total += match codec {
                    "lz4_flex" => lz4_flex::block::compress(block).len(),
                    _ => {
                        out.clear();
                        out.reserve(zstd::zstd_safe::compress_bound(block.len()));
                        compressor
                            .compress_to_buffer(block, &mut out)
                            .expect("compress")
                    }
                };
            }
            let took = started.elapsed().as_secs_f64();
            println!(
                "block {block_kib:>4} KiB {codec:>9}: {:6.1} bytes/line, ratio {:5.2}, {:7.0} MB/s, {:5.2} M lines/s",
                total as f64 / lines as f64,
                corpus.len() as f64 / total as f64,
                corpus.len() as f64 / took / 1e6,
                lines as f64 / took / 1e6
            );
        }
    }
}

fn level(codec: &str) -> i32 {
    match codec {
        "zstd-1" => -1,
        "zstd3" => 3,
        _ => 1,
    }
}

/// Blocks of whole lines, each at most `block_bytes` (or one line).
fn cut(corpus: &[u8], block_bytes: usize) -> Vec<&[u8]> {
    let mut blocks = Vec::new();
    let mut start = 0;
    while start < corpus.len() {
        let mut end = (start + block_bytes).min(corpus.len());
        if end < corpus.len() {
            end = corpus[start..end]
                .iter()
                .rposition(|&byte| byte == b'\n')
                .map_or(end, |at| start + at + 1);
        }
        blocks.push(&corpus[start..end]);
        start = end;
    }
    blocks
}

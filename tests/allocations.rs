//! Goal: steady-state allocations per line stay at or below 0.01 with two
//! sinks attached. Method: a counting global allocator wraps the system
//! allocator; an in-process pipeline ships a 1.3M-line file to a `null` and
//! a `raw` file sink; allocations are counted between the moment 100k lines
//! were processed (warm-up) and 1,000,000 lines later, while the source
//! still has input left, so that start-up and shutdown are excluded.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use log_capturer::config::Config;
use log_capturer::pipeline::Pipeline;

struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments, so
// `System`'s guarantees hold unchanged; the counter is a plain atomic.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: `pointer` came from `System` through this allocator.
        unsafe { System.dealloc(pointer, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(pointer, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const WARM_UP_LINES: u64 = 100_000;
const MEASURED_LINES: u64 = 1_000_000;
const INPUT_LINES: u64 = 1_300_000;

#[test]
fn steady_state_allocations_per_line_at_most_one_hundredth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.log");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input).expect("create input"));
    common::write_numbered_lines(&mut file, 0, INPUT_LINES);
    drop(file);
    let output = dir.path().join("output.log");
    let sinks = format!(
        "[sinks.drop]\ntype = \"null\"\n\n[sinks.archive]\ntype = \"file\"\npath = \"{}\"\nencoding = \"raw\"",
        output.display()
    );
    let text = common::file_source_config(&input, "exit_on_eof = true", &sinks);
    let config =
        Config::from_toml(&text, std::path::Path::new("allocations.toml")).expect("valid config");
    let pipeline = Pipeline::start(&config).expect("pipeline starts");
    let processed = || pipeline.metrics().dispatcher.lines_processed.get();

    let (lines_start, allocations_start) = sample_when(WARM_UP_LINES, processed);
    let (lines_end, allocations_end) = sample_when(lines_start + MEASURED_LINES, processed);
    assert!(
        lines_end < INPUT_LINES,
        "measurement ended before the input did ({lines_end})"
    );

    pipeline.request_stop();
    pipeline.join(Duration::from_secs(30)).expect("clean stop");
    let lines = lines_end - lines_start;
    let allocations = allocations_end - allocations_start;
    let per_line = allocations as f64 / lines as f64;
    println!("{allocations} allocations over {lines} lines: {per_line:.5} per line");
    assert!(lines >= MEASURED_LINES, "measured {lines} lines");
    assert!(per_line <= 0.01, "{per_line} allocations per line");
}

/// Spins (without allocating) until `processed()` reaches `lines`, then
/// reads the line count and the allocation count together.
fn sample_when(lines: u64, processed: impl Fn() -> u64) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while processed() < lines {
        assert!(
            Instant::now() < deadline,
            "pipeline stalled before {lines} lines"
        );
        std::thread::yield_now();
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    (processed(), allocations)
}

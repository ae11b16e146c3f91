//! Figures about the process itself, read from `/proc/self`: resident
//! memory and its peak, threads, open descriptors, CPU time and the start
//! time. Read by the metrics thread only, once per tick or scrape.
//!
//! Invariant: `peak_rss_bytes >= rss_bytes` in every reading. Both come from
//! one read of `/proc/self/status` (`VmHWM`, `VmRSS`), where the kernel
//! computes them from the same counters; `getrusage`'s `ru_maxrss` (what
//! mimalloc reports as its peak) is refreshed lazily and was seen below the
//! current RSS of `/proc/self/statm`, so neither is used for the pair.

use std::time::Instant;

/// One reading of the process's own figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessReading {
    /// `VmRSS`: resident memory now.
    pub rss_bytes: u64,
    /// `VmHWM`, and never below `rss_bytes`: the highest resident memory.
    pub peak_rss_bytes: u64,
    pub virtual_bytes: u64,
    pub threads: u64,
    pub file_descriptors: u64,
    /// User plus system CPU time since start, seconds.
    pub cpu_seconds: f64,
}

/// Reads `/proc/self`. A field that cannot be read stays 0.
pub fn read_process() -> ProcessReading {
    let mut reading = ProcessReading::default();
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        let mut fields = statm
            .split_whitespace()
            .map(|field| field.parse::<u64>().unwrap_or(0));
        let page = page_bytes();
        reading.virtual_bytes = fields.next().unwrap_or(0) * page;
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let figures = StatusFigures::parse(&status);
        reading.rss_bytes = figures.rss_bytes;
        reading.peak_rss_bytes = figures.peak_rss_bytes;
        reading.threads = figures.threads;
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        // The directory handle being read is itself one descriptor.
        reading.file_descriptors = entries.count().saturating_sub(1) as u64;
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        reading.cpu_seconds = cpu_seconds_from_stat(&stat);
    }
    reading
}

/// The figures this module takes from one `/proc/self/status` text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct StatusFigures {
    rss_bytes: u64,
    peak_rss_bytes: u64,
    threads: u64,
}

impl StatusFigures {
    /// Parses `VmRSS`, `VmHWM` (both in kB) and `Threads`. The peak is
    /// raised to the current value, so that the pair never contradicts
    /// itself whatever the kernel's rounding.
    fn parse(status: &str) -> Self {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|value| value.split_whitespace().next())
                .and_then(|value| value.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let rss_bytes = field("VmRSS:") * 1024;
        Self {
            rss_bytes,
            peak_rss_bytes: (field("VmHWM:") * 1024).max(rss_bytes),
            threads: field("Threads:"),
        }
    }
}

/// When the process started, in seconds since the Unix epoch: the boot
/// time (`btime` of `/proc/stat`) plus the start time in clock ticks after
/// boot (field 22 of `/proc/self/stat`). `None` if either cannot be read.
pub fn start_time_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let boot_seconds: u64 = stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (_, after_name) = own.rsplit_once(')')?;
    // After the name, field 3 (state) is index 0, so starttime (22) is 19.
    let ticks: u64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    Some(boot_seconds as f64 + ticks as f64 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions; it only returns a
    // number (or -1, which `max(1)` turns into 1).
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    per_second.max(1) as f64
}

fn page_bytes() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions; it only returns a
    // number (or -1, handled below).
    let bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(bytes).unwrap_or(4096)
}

/// utime + stime (fields 14 and 15) of `/proc/self/stat`, in seconds. The
/// command name (field 2) may hold spaces, so fields are counted after its
/// closing parenthesis.
fn cpu_seconds_from_stat(stat: &str) -> f64 {
    let Some((_, after_name)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|field| field.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // After the name, field 3 (state) is index 0, so utime (14) is index 11.
    let total = ticks(11) + ticks(12);
    total as f64 / clock_ticks_per_second()
}

/// CPU usage in percent of one core between two readings.
#[derive(Debug)]
pub struct CpuMeter {
    last_seconds: f64,
    last_at: Instant,
    percent: f64,
}

impl CpuMeter {
    pub fn new(reading: &ProcessReading) -> Self {
        Self {
            last_seconds: reading.cpu_seconds,
            last_at: Instant::now(),
            percent: 0.0,
        }
    }

    /// Updates from a new reading and returns the percent since the last.
    pub fn update(&mut self, reading: &ProcessReading) -> f64 {
        let elapsed = self.last_at.elapsed().as_secs_f64();
        if elapsed > 0.2 {
            self.percent = 100.0 * (reading.cpu_seconds - self.last_seconds).max(0.0) / elapsed;
            self.last_seconds = reading.cpu_seconds;
            self.last_at = Instant::now();
        }
        self.percent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let reading = read_process();
        assert!(reading.rss_bytes > 0);
        assert!(
            reading.peak_rss_bytes >= reading.rss_bytes,
            "peak {} below current {}",
            reading.peak_rss_bytes,
            reading.rss_bytes
        );
        assert!(reading.threads >= 1);
        assert!(
            reading.file_descriptors >= 3,
            "stdin, stdout, stderr at least"
        );
    }

    /// Goal: the peak never reads below the current RSS, even when the
    /// kernel's high-water mark lags (it is refreshed lazily). Method: a
    /// status text whose `VmHWM` is below its `VmRSS`.
    #[test]
    fn peak_is_raised_to_current_rss() {
        let status = "Name:\tx\nVmHWM:\t   25692 kB\nVmRSS:\t   25888 kB\nThreads:\t7\n";
        assert_eq!(
            StatusFigures::parse(status),
            StatusFigures {
                rss_bytes: 25888 * 1024,
                peak_rss_bytes: 25888 * 1024,
                threads: 7,
            }
        );
        let status = "VmHWM:\t   30000 kB\nVmRSS:\t   25888 kB\n";
        assert_eq!(StatusFigures::parse(status).peak_rss_bytes, 30000 * 1024);
    }

    /// Goal: the start time is now-ish for this test process. Method:
    /// compare with the wall clock; the process started minutes ago at most.
    #[test]
    fn start_time_is_in_the_recent_past() {
        let started = start_time_seconds().expect("readable /proc");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        assert!(started <= now + 1.0, "started {started}, now {now}");
        assert!(started > now - 3600.0, "started {started}, now {now}");
    }

    #[test]
    fn stat_with_spaces_in_name() {
        let stat = "42 (a b) c) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0";
        // SAFETY: sysconf has no memory-safety preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert_eq!(cpu_seconds_from_stat(stat), 400.0 / per_second);
    }
}

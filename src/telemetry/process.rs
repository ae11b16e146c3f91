//! Figures about the process itself, read from `/proc/self`: resident
//! memory, threads, open descriptors and CPU time. Read by the metrics
//! thread only, once per tick or scrape.

use std::time::Instant;

/// One reading of the process's own figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessReading {
    pub rss_bytes: u64,
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
        reading.rss_bytes = fields.next().unwrap_or(0) * page;
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        reading.threads = status
            .lines()
            .find_map(|line| line.strip_prefix("Threads:"))
            .and_then(|count| count.trim().parse().ok())
            .unwrap_or(0);
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
    // SAFETY: sysconf has no memory-safety preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    total as f64 / per_second.max(1) as f64
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
        assert!(reading.threads >= 1);
        assert!(
            reading.file_descriptors >= 3,
            "stdin, stdout, stderr at least"
        );
    }

    #[test]
    fn stat_with_spaces_in_name() {
        let stat = "42 (a b) c) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0";
        // SAFETY: sysconf has no memory-safety preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert_eq!(cpu_seconds_from_stat(stat), 400.0 / per_second);
    }
}

//! Giving back the pages of code that only start-up ran.
//!
//! Start-up runs code the steady state never touches again: argument and
//! config parsing, the dynamic loader's symbol lookups and relocation of
//! the shared libraries (libcrypto alone maps 1.2 MiB that way), the
//! setting-up of librdkafka. The kernel maps file pages around each one a
//! thread touches, so those pages stayed in the daemon's resident set for
//! the whole run: measured at 50,000 lines/s into Kafka, 4.1 MiB of the
//! executable's code was resident and 1.2 MiB of it was referenced in a
//! steady second; libcrypto's 1.4 MiB and libm's 0.5 MiB not at all.
//!
//! [`release_code_pages`] reads `/proc/self/smaps` once and unmaps, with
//! `MADV_DONTNEED`, every private read-only mapping of a file that holds
//! no page of its own (`Anonymous: 0 kB`): code and read-only data, which
//! are the file's pages unchanged. The pages stay in the page cache; the
//! ones the running daemon needs are mapped again at their next touch, at
//! the cost of a minor fault. Mappings with a private copy of any page
//! (relocated read-only data, a debugger's breakpoint) are left alone:
//! dropping their copies would bring back the file's unrelocated bytes.
//!
//! Thread: the caller's (the main thread, once, after the stages started).
//! Allocations: the text of `/proc/self/smaps` (about 100 KiB), freed
//! before it returns.

use std::io;

/// What one call released.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    /// Mappings unmapped.
    pub mappings: usize,
    /// Resident bytes they held just before.
    pub resident_bytes: u64,
}

/// Unmaps the resident pages of the process's private, read-only file
/// mappings that hold no private page. See the module documentation.
pub fn release_code_pages() -> io::Result<Released> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = Released::default();
    for mapping in code_mappings(&smaps) {
        // SAFETY: `mapping` is a whole mapping of this process, read from
        // smaps: private, not writable, backed by a file, and without an
        // anonymous (copied-on-write) page. MADV_DONTNEED on such a range
        // only drops page-table entries; every later access maps the
        // file's page again, whose bytes are the same as the ones dropped.
        // No Rust reference is invalidated: the memory stays mapped.
        let result = unsafe {
            libc::madvise(
                mapping.start as *mut libc::c_void,
                mapping.end - mapping.start,
                libc::MADV_DONTNEED,
            )
        };
        if result == 0 {
            released.mappings += 1;
            released.resident_bytes += mapping.resident_bytes;
        }
    }
    Ok(released)
}

/// A mapping [`release_code_pages`] may release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CodeMapping {
    start: usize,
    end: usize,
    resident_bytes: u64,
}

/// The mappings of `smaps` text that are private, not writable, backed by
/// a file (a path), resident, and without anonymous pages.
fn code_mappings(smaps: &str) -> Vec<CodeMapping> {
    // Every mapping with its eligibility and anonymous KiB; the fields
    // after a header belong to it.
    let mut mappings: Vec<(CodeMapping, bool, u64)> = Vec::new();
    for line in smaps.lines() {
        if let Some((mapping, eligible)) = mapping_header(line) {
            mappings.push((mapping, eligible, 0));
        } else if let Some((mapping, _, anonymous_kib)) = mappings.last_mut() {
            if let Some(kib) = field_kib(line, "Rss:") {
                mapping.resident_bytes = kib * 1024;
            } else if let Some(kib) = field_kib(line, "Anonymous:") {
                *anonymous_kib = kib;
            }
        }
    }
    mappings
        .into_iter()
        .filter(|&(mapping, eligible, anonymous_kib)| {
            eligible && anonymous_kib == 0 && mapping.resident_bytes > 0
        })
        .map(|(mapping, _, _)| mapping)
        .collect()
}

/// `start-end perms offset dev inode path`: the range, and whether the
/// mapping is private, read-only and of a file.
fn mapping_header(line: &str) -> Option<(CodeMapping, bool)> {
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = fields.next()?.as_bytes();
    if perms.len() != 4 || end <= start {
        return None;
    }
    // Anonymous mappings have no path.
    let path = fields.nth(3).unwrap_or("");
    let eligible =
        perms[0] == b'r' && perms[1] == b'-' && perms[3] == b'p' && path.starts_with('/');
    let mapping = CodeMapping {
        start,
        end,
        resident_bytes: 0,
    };
    Some((mapping, eligible))
}

/// The figure of a `Name:   N kB` line.
fn field_kib(line: &str, name: &str) -> Option<u64> {
    line.strip_prefix(name)?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
5580218b7000-558021a70000 r--p 00000000 fe:00 5443369                    /usr/bin/log-capturer
Size:               1764 kB
Rss:                 960 kB
Anonymous:             0 kB
558021a70000-5580220b5000 r-xp 001b8000 fe:00 5443369                    /usr/bin/log-capturer
Size:               6420 kB
Rss:                4276 kB
Anonymous:             0 kB
5580220b5000-55802210d000 r--p 007fc000 fe:00 5443369                    /usr/bin/log-capturer
Size:                352 kB
Rss:                 352 kB
Anonymous:           352 kB
55802210d000-55802210f000 rw-p 00854000 fe:00 5443369                    /usr/bin/log-capturer
Size:                  8 kB
Rss:                   8 kB
Anonymous:             8 kB
7f235a6c5000-7f235a944000 r-xp 000c5000 fe:00 15695881                   /usr/lib/x86_64-linux-gnu/libcrypto.so.3
Size:               2556 kB
Rss:                   0 kB
Anonymous:             0 kB
7f235a944000-7f235a945000 r--s 00000000 fe:00 99                         /var/lib/log-capturer/dlq/kafka/00000001.seg
Size:                  4 kB
Rss:                   4 kB
Anonymous:             0 kB
7ffd1532d000-7ffd1532f000 r-xp 00000000 00:00 0                          [vdso]
Size:                  8 kB
Rss:                   4 kB
Anonymous:             0 kB
20000000000-20040000000 rw-p 00000000 00:00 0 
Size:            1048576 kB
Rss:                2216 kB
Anonymous:          2216 kB
";

    /// Goal: only pages that are the file's own bytes are released. Method:
    /// a smaps text with the executable's segments, a shared mapping, the
    /// vDSO and the heap arena.
    #[test]
    fn only_unchanged_private_read_only_file_pages_are_chosen() {
        let chosen = code_mappings(SMAPS);
        assert_eq!(
            chosen,
            vec![
                CodeMapping {
                    start: 0x5580218b7000,
                    end: 0x558021a70000,
                    resident_bytes: 960 * 1024,
                },
                CodeMapping {
                    start: 0x558021a70000,
                    end: 0x5580220b5000,
                    resident_bytes: 4276 * 1024,
                },
            ],
            "code and read-only data; not relocated data (private copies), \
             not writable data, not unmapped libcrypto, not a shared DLQ \
             segment, not the vDSO, not the heap"
        );
    }

    /// Goal: releasing the test process's own code pages is sound: they
    /// are mapped again when run, and the bytes read back are the same.
    /// Method: checksum a function's first bytes and a constant table,
    /// release, run code and checksum again.
    #[test]
    fn released_code_runs_again_unchanged() {
        static TABLE: [u64; 512] = {
            let mut table = [0u64; 512];
            let mut index = 0;
            while index < table.len() {
                table[index] = (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                index += 1;
            }
            table
        };
        let before: u64 = TABLE.iter().fold(0, |sum, value| sum ^ value);
        let released = release_code_pages().expect("read /proc/self/smaps");
        assert!(released.mappings > 0, "the test binary has code mappings");
        assert!(released.resident_bytes > 0, "some code was resident");
        let after: u64 = std::hint::black_box(&TABLE)
            .iter()
            .fold(0, |sum, value| sum ^ value);
        assert_eq!(before, after, "read-only data reads back unchanged");
        let text = format!("{:?}", code_mappings(SMAPS).len());
        assert_eq!(text, "2", "formatting (std code) runs after the release");
    }
}

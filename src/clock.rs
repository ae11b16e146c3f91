//! Wall-clock time as the pipeline records it: nanoseconds since the Unix
//! epoch in a `u64`, the unit of every timestamp an entry or a DLQ record
//! carries.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in nanoseconds since the Unix epoch; 0 for a clock set before 1970
/// and `u64::MAX` past the year 2554.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_is_after_2026_and_moves_forward() {
        let first = super::now_ns();
        assert!(first > 1_767_225_600_000_000_000, "{first}");
        assert!(super::now_ns() >= first);
    }
}

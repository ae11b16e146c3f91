//! The config parser takes operator-written bytes: any input must give a
//! config or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = log_capturer::config::Config::from_toml(text, std::path::Path::new("fuzz.toml"));
    }
});

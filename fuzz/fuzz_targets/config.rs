//! The config parser takes operator-written bytes: any input must give a
//! config or an error, never a panic. A config that parses has a source and
//! a sink; an error that names a line names one that exists in the input,
//! and its message can be formatted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use log_capturer::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml(text, std::path::Path::new("fuzz.toml")) {
        Ok(config) => {
            assert!(!config.sources.is_empty());
            assert!(!config.sinks.is_empty());
        }
        Err(error) => {
            let message = error.to_string();
            assert!(message.contains("fuzz.toml"), "{message}");
            if let ConfigError::Invalid {
                line: Some(line), ..
            } = &error
            {
                let lines = text.lines().count().max(1);
                assert!(
                    (1..=lines).contains(&line.number),
                    "line {} of {lines}: {message}",
                    line.number
                );
            }
        }
    }
});

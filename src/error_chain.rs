//! Printing an error with its causes, each once.
//!
//! An error type of this crate that keeps a cause in `source()` does not
//! repeat the cause's text in its own message: whoever prints the error
//! prints the chain ([`ErrorChain`], in the binary and in log lines). Doing
//! both would print "No such file or directory" twice.
//!
//! Some errors of other crates do both (rdkafka's `KafkaError` names its
//! error code in its message and returns it as its source), so the chain
//! leaves out a cause whose text the message above it already contains.

/// Displays an error followed by each of its sources, joined by ": ",
/// without a cause its parent's message already includes.
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'error>(pub &'error (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only error paths format a chain: the allocations are not on the
        // data path.
        let mut parent = self.0.to_string();
        formatter.write_str(&parent)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let text = error.to_string();
            if !parent.contains(&text) {
                write!(formatter, ": {text}")?;
            }
            parent = text;
            cause = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open {path}")]
    struct OpenError {
        path: &'static str,
        #[source]
        source: std::io::Error,
    }

    /// Goal: each message of a chain is printed once. Method: an error with
    /// an OS error as its source.
    #[test]
    fn chain_names_each_cause_once() {
        let error = OpenError {
            path: "/nowhere/file",
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        let text = ErrorChain(&error).to_string();
        assert!(text.starts_with("cannot open /nowhere/file: "), "{text}");
        assert_eq!(
            text.matches("No such file or directory").count(),
            1,
            "{text}"
        );
    }

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped: {source}")]
    struct Repeating {
        #[source]
        source: std::io::Error,
    }

    /// Goal: an error of another crate that repeats its source in its
    /// message still prints the source once. Method: a type that does both,
    /// under one of ours.
    #[test]
    fn chain_skips_a_cause_its_parent_already_names() {
        let error = OpenError {
            path: "/file",
            source: std::io::Error::other(Repeating {
                source: std::io::Error::from_raw_os_error(libc::EACCES),
            }),
        };
        let text = ErrorChain(&error).to_string();
        assert_eq!(text.matches("Permission denied").count(), 1, "{text}");
        assert!(text.starts_with("cannot open /file: wrapped: "), "{text}");
    }
}

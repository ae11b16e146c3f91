//! Printing an error with its causes, each once.
//!
//! An error type of this crate that keeps a cause in `source()` does not
//! repeat the cause's text in its own message: whoever prints the error
//! prints the chain (anyhow's `{:#}` in the binary, [`ErrorChain`] in log
//! lines). Doing both would print "No such file or directory" twice.

/// Displays an error followed by each of its sources, joined by ": ".
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'error>(pub &'error (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(formatter, ": {error}")?;
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
}

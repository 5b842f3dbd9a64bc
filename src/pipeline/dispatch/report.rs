//! The dispatcher's log lines as values: [`super::Dispatch`] decides
//! which to say, the actor says them (so their target stays the
//! dispatcher's module), and a test pins their words and levels.

use std::fmt;
use std::time::Duration;

use super::Cause;

/// A line the actor logs, at [`Report::level`].
#[derive(Debug, Clone, PartialEq)]
pub(in crate::pipeline) enum Report {
    /// A claim found deletions paused; the first since they ran.
    Paused,
    /// A claim ran again after a pause.
    Resumed,
    /// A claim failed with something other than an outage: once a streak.
    ClaimFailed { error: String },
    /// The storage refused a batch: once a streak.
    StorageUnavailable { reason: String },
    /// Trouble of `cause` ended after `after`, with `failures` failed tries.
    Recovered {
        cause: Cause,
        after: Duration,
        failures: u32,
    },
}

impl Report {
    pub(in crate::pipeline) fn level(&self) -> log::Level {
        match self {
            Report::Paused | Report::Resumed | Report::Recovered { .. } => log::Level::Info,
            Report::ClaimFailed { .. } => log::Level::Error,
            Report::StorageUnavailable { .. } => log::Level::Warn,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Report::Paused => {
                f.write_str("deletions paused by an operator; claiming again once resumed")
            }
            Report::Resumed => f.write_str("deletions resumed"),
            Report::ClaimFailed { error } => {
                write!(f, "claim failed; retrying with backoff: {error}")
            }
            Report::StorageUnavailable { reason } => {
                write!(f, "storage unavailable, pausing deletions: {reason}")
            }
            Report::Recovered {
                cause,
                after,
                failures,
            } => {
                let what = match cause {
                    Cause::Database => "claims work",
                    Cause::Storage => "storage is usable",
                };
                write!(
                    f,
                    "{what} again after {after:.1?} ({failures} failed tries); dispatching again"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Level::{Error, Info, Warn};

    fn recovered(cause: Cause, after_ms: u64, failures: u32) -> Report {
        let after = Duration::from_millis(after_ms);
        Report::Recovered {
            cause,
            after,
            failures,
        }
    }

    #[test]
    fn each_report_is_the_line_the_dispatcher_logged_before() {
        let storage = "storage unavailable, pausing deletions: no marker";
        let back = "claims work again after 1.4s (3 failed tries); dispatching again";
        let usable = "storage is usable again after 300.0ms (2 failed tries); dispatching again";
        let paused = "deletions paused by an operator; claiming again once resumed";
        for (report, level, line) in [
            (Report::Paused, Info, paused),
            (Report::Resumed, Info, "deletions resumed"),
            (
                Report::ClaimFailed {
                    error: "boom".into(),
                },
                Error,
                "claim failed; retrying with backoff: boom",
            ),
            (
                Report::StorageUnavailable {
                    reason: "no marker".into(),
                },
                Warn,
                storage,
            ),
            (recovered(Cause::Database, 1400, 3), Info, back),
            (recovered(Cause::Storage, 300, 2), Info, usable),
        ] {
            assert_eq!(
                (report.level(), report.to_string()),
                (level, line.to_owned())
            );
        }
    }
}

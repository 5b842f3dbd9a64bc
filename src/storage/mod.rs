//! Where video files live, and how one video's files are deleted.

pub mod local;

pub use local::LocalStorage;

/// What deleting one video found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// At least one of its paths existed and is now gone.
    Deleted,
    /// None of its paths existed: counts as deleted.
    Missing,
}

/// A deletion that did not happen; the message goes to `last_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct DeleteError {
    /// The path relative to the storage root.
    pub path: String,
    pub reason: String,
}

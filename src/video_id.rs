//! [`VideoId`]: the only way to name a video inside the scheduler.
//!
//! Ids end up in file paths, so they are validated once, at the edge (HTTP,
//! CLI), and every later layer takes a `VideoId` rather than a `&str`.

use std::fmt;

/// Longest id accepted, in bytes: the width of `video_del_rec.id`.
pub(crate) const MAX_LEN: usize = 64;

/// A validated video id: 1 to 64 bytes of `[A-Za-z0-9._-]`, and not `.` or `..`.
///
/// These rules make an id safe as one path component: no separator, no
/// parent reference, nothing the shell or a URL would reinterpret.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct VideoId(String);

/// Why a string is not a [`VideoId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    /// The seed answered this exact text, so clients may match on it.
    #[error("video id should not be empty")]
    Empty,
    #[error("invalid video id: longer than {MAX_LEN} bytes")]
    TooLong,
    #[error("invalid video id: only A-Z a-z 0-9 . _ - are allowed")]
    BadChar,
    #[error("invalid video id: `.` and `..` are not ids")]
    DotName,
}

impl VideoId {
    /// Validates `s` as a video id.
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        if s.is_empty() {
            return Err(InvalidId::Empty);
        }
        if s.len() > MAX_LEN {
            return Err(InvalidId::TooLong);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(InvalidId::BadChar);
        }
        if s == "." || s == ".." {
            return Err(InvalidId::DotName);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl AsRef<str> for VideoId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VideoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for VideoId {
    type Err = InvalidId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_uuids_and_the_allowed_punctuation() {
        for ok in [
            "9f8b2c3e-1d4a-4b6c-8e7f-0a1b2c3d4e5f",
            "a",
            "A.b_c-d",
            "...",
            ".hidden",
            &"x".repeat(64),
        ] {
            assert_eq!(VideoId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_everything_that_could_escape_a_path_component() {
        let cases: &[(&str, InvalidId)] = &[
            ("", InvalidId::Empty),
            (&"x".repeat(65), InvalidId::TooLong),
            (".", InvalidId::DotName),
            ("..", InvalidId::DotName),
            ("../x", InvalidId::BadChar),
            ("a/b", InvalidId::BadChar),
            ("a\\b", InvalidId::BadChar),
            ("%2e%2e%2fetc", InvalidId::BadChar),
            ("a\0b", InvalidId::BadChar),
            ("a b", InvalidId::BadChar),
            ("vidéo", InvalidId::BadChar),
            ("{id}", InvalidId::BadChar),
        ];
        for (bad, why) in cases {
            assert_eq!(VideoId::parse(bad), Err(*why), "{bad:?}");
        }
    }
}

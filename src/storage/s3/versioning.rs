//! The bucket's versioning, read with GetBucketVersioning at start-up and
//! again whenever the last reading is `storage.versioning_check_secs` old
//! (by a task of the storage's runtime while idle, or by the batch about
//! to delete), so that a bucket switched to versioning under a running
//! server is seen before it can make a receipt false.
//!
//! A reading that failed (the bucket unreachable, the permission missing)
//! is kept as the state: the target is then unavailable, since nobody
//! knows how a delete would end there. A server without the operation
//! (`501 NotImplemented`: Cloudflare R2, some others) has no versioning.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::client::{Client, Request, RequestError};
use super::xml::{self, Item};

/// The bucket's `Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    /// Never versioned: a delete removes the object.
    Unversioned,
    /// A plain delete adds a delete marker; every version stays.
    Enabled,
    /// A plain delete replaces the `null` version by a delete marker;
    /// older versions stay.
    Suspended,
}

impl Status {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Status::Unversioned => "unversioned",
            Status::Enabled => "Enabled",
            Status::Suspended => "Suspended",
        }
    }
}

/// What GetBucketVersioning said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Versioning {
    pub status: Status,
    /// Deleting a version needs an MFA code, which the scheduler has none
    /// of.
    pub mfa_delete: bool,
}

/// Reads the bucket's versioning once.
pub(super) async fn read(client: &Client) -> Result<Versioning, RequestError> {
    match client
        .send(Request::get("GetBucketVersioning", "versioning=".into()))
        .await
    {
        Ok(body) => parse(&body).map_err(|e| RequestError {
            reason: format!("GetBucketVersioning: unreadable answer: {e}"),
            transient: false,
            not_implemented: false,
        }),
        Err(e) if e.not_implemented => Ok(Versioning {
            status: Status::Unversioned,
            mfa_delete: false,
        }),
        Err(e) => Err(e),
    }
}

fn parse(body: &[u8]) -> Result<Versioning, String> {
    let (mut status, mut mfa) = (None, None);
    xml::read(
        body,
        |record, name| record.is_none() && matches!(name, b"Status" | b"MfaDelete"),
        |item| match item {
            Item::Field(f) if f.name == b"Status" => status = Some(f.text.trim().to_owned()),
            Item::Field(f) => mfa = Some(f.text.trim().to_owned()),
            Item::End(_) => {}
        },
    )?;
    let status = match status.as_deref() {
        None | Some("") => Status::Unversioned,
        Some("Enabled") => Status::Enabled,
        Some("Suspended") => Status::Suspended,
        Some(other) => return Err(format!("unknown Status {other:?}")),
    };
    Ok(Versioning {
        status,
        mfa_delete: mfa.as_deref() == Some("Enabled"),
    })
}

/// The last reading and when it was made.
#[derive(Debug, Clone)]
struct Reading {
    state: Result<Versioning, String>,
    at: Instant,
    /// Failed readings in a row, for the retry backoff.
    failures: u32,
}

/// The bucket's versioning as last read, read again when stale.
#[derive(Debug)]
pub(super) struct Watch {
    bucket: String,
    /// `storage.versioning_check_secs`.
    every: Duration,
    /// `None` until the first reading ends.
    last: Mutex<Option<Reading>>,
    /// One reading at a time: a batch that finds the state stale while
    /// another reading is on its way waits for that one.
    reading: tokio::sync::Mutex<()>,
}

/// Longest wait before a failed reading is tried again.
const MAX_RETRY: Duration = Duration::from_secs(30);

impl Watch {
    pub(super) fn new(bucket: String, every: Duration) -> Watch {
        Watch {
            bucket,
            every,
            last: Mutex::new(None),
            reading: tokio::sync::Mutex::new(()),
        }
    }

    /// The last reading, without a request (for `/readyz` and the stats):
    /// `Err` says why it is not known.
    pub(super) fn last(&self) -> Result<Versioning, String> {
        match &*self.last.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Err(format!(
                "bucket {}: its versioning has not been read yet",
                self.bucket
            )),
            Some(reading) => reading.state.clone(),
        }
    }

    /// How long the last reading stays good: `versioning_check_secs` for a
    /// success, a backoff (1 s doubling, at most 30 s and the check
    /// interval) for a failure.
    fn good_for(&self, reading: &Reading) -> Duration {
        match reading.state {
            Ok(_) => self.every,
            Err(_) => Duration::from_secs(1 << reading.failures.min(5).saturating_sub(1))
                .min(MAX_RETRY)
                .min(self.every),
        }
    }

    /// How long until the last reading is stale (zero when it is, or when
    /// there is none).
    fn fresh_for(&self) -> Duration {
        match &*self.last.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Duration::ZERO,
            Some(reading) => self.good_for(reading).saturating_sub(reading.at.elapsed()),
        }
    }

    /// The state to delete by: the last reading while it is fresh, else a
    /// new one.
    pub(super) async fn current(&self, client: &Client) -> Result<Versioning, String> {
        if self.fresh_for() > Duration::ZERO {
            return self.last();
        }
        self.refresh(client, false).await
    }

    /// Reads the versioning again: when stale, or always with `force` (a
    /// delete just showed the bucket is not what the last reading said).
    pub(super) async fn refresh(&self, client: &Client, force: bool) -> Result<Versioning, String> {
        let _one = self.reading.lock().await;
        if !force && self.fresh_for() > Duration::ZERO {
            return self.last();
        }
        let state = read(client).await.map_err(|e| {
            format!(
                "bucket {}: cannot read its versioning, so nothing is deleted there until it \
                 can: {}",
                self.bucket, e.reason
            )
        });
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let before = last.as_ref().map(|r| r.state.clone());
        if let (Some(Ok(was)), Ok(now)) = (&before, &state) {
            if was != now {
                log::warn!(
                    "bucket {}: versioning is now {}{} (was {}{})",
                    self.bucket,
                    now.status.as_str(),
                    if now.mfa_delete {
                        ", MFA Delete on"
                    } else {
                        ""
                    },
                    was.status.as_str(),
                    if was.mfa_delete {
                        ", MFA Delete on"
                    } else {
                        ""
                    },
                );
            }
        }
        let failures = match (&state, last.as_ref()) {
            (Ok(_), _) => 0,
            (Err(_), Some(reading)) => reading.failures + 1,
            (Err(_), None) => 1,
        };
        *last = Some(Reading {
            state: state.clone(),
            at: Instant::now(),
            failures,
        });
        state
    }

    /// Keeps the reading fresh while no batch needs it, so that `/readyz`
    /// and the stats say what the bucket is now. Runs until the runtime
    /// stops.
    pub(super) async fn keep_fresh(self: std::sync::Arc<Self>, client: std::sync::Arc<Client>) {
        loop {
            tokio::time::sleep(self.fresh_for()).await;
            let _ = self.refresh(&client, false).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_answer_of_get_bucket_versioning() {
        let read = |body: &str| parse(body.as_bytes()).unwrap();
        // AWS answers a never-versioned bucket with an empty configuration.
        assert_eq!(
            read(r#"<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"/>"#)
                .status,
            Status::Unversioned
        );
        let enabled = read(
            "<VersioningConfiguration><Status>Enabled</Status>\
             <MfaDelete>Enabled</MfaDelete></VersioningConfiguration>",
        );
        assert_eq!(
            enabled,
            Versioning {
                status: Status::Enabled,
                mfa_delete: true
            }
        );
        // moto's root element differs; only the fields matter.
        let suspended = read(
            "<GetBucketVersioningResponse><Status>Suspended</Status>\
             <MfaDelete>Disabled</MfaDelete></GetBucketVersioningResponse>",
        );
        assert_eq!(
            suspended,
            Versioning {
                status: Status::Suspended,
                mfa_delete: false
            }
        );
        assert!(
            parse(b"<VersioningConfiguration><Status>On</Status></VersioningConfiguration>")
                .is_err()
        );
    }
}

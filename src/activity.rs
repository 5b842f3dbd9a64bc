//! Deletions per time bucket over the last 15 minutes, kept in memory by
//! this instance for the dashboard's chart (`GET /v1/activity`): executors
//! add their counts, readers copy 90 numbers. Nothing is written to the
//! database for it, so it costs the drain nothing measurable; the price is
//! that it is per instance and starts empty at each start.

use std::sync::Mutex;

use crate::clock::now_ms;

/// Width of a bucket.
pub(crate) const BUCKET_MS: i64 = 10_000;
/// Buckets kept: 15 minutes.
pub(crate) const BUCKETS: usize = 90;

/// Counts of one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Bucket {
    /// Start of the bucket, epoch ms.
    pub start_ms: i64,
    /// Ids completed (deleted or found missing).
    pub deleted: u64,
    /// Failed attempts.
    pub failed: u64,
}

/// A ring of the last [`BUCKETS`] buckets.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    ring: Mutex<Vec<Bucket>>,
}

impl Activity {
    /// Adds a batch's counts to the current bucket.
    pub(crate) fn add(&self, deleted: u64, failed: u64) {
        self.add_at(now_ms(), deleted, failed);
    }

    fn add_at(&self, now: i64, deleted: u64, failed: u64) {
        let start = now - now.rem_euclid(BUCKET_MS);
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() < BUCKETS {
            ring.resize(BUCKETS, Bucket::default());
        }
        let slot = &mut ring[(start / BUCKET_MS).rem_euclid(BUCKETS as i64) as usize];
        if slot.start_ms != start {
            *slot = Bucket {
                start_ms: start,
                ..Bucket::default()
            };
        }
        slot.deleted += deleted;
        slot.failed += failed;
    }

    /// The last 15 minutes, oldest first, one entry per bucket (zeros
    /// where nothing happened).
    pub(crate) fn last_15_minutes(&self) -> Vec<Bucket> {
        self.window_at(now_ms())
    }

    fn window_at(&self, now: i64) -> Vec<Bucket> {
        let current = now - now.rem_euclid(BUCKET_MS);
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        (0..BUCKETS as i64)
            .rev()
            .map(|back| {
                let start = current - back * BUCKET_MS;
                let slot = ring
                    .get((start / BUCKET_MS).rem_euclid(BUCKETS as i64) as usize)
                    .filter(|b| b.start_ms == start);
                Bucket {
                    start_ms: start,
                    ..slot.copied().unwrap_or_default()
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_their_bucket_and_old_ones_fall_out() {
        let activity = Activity::default();
        let t0 = 1_764_000_000_000;
        activity.add_at(t0, 5, 1);
        activity.add_at(t0 + 1, 2, 0);
        activity.add_at(t0 + BUCKET_MS, 7, 0);
        let window = activity.window_at(t0 + BUCKET_MS);
        assert_eq!(window.len(), BUCKETS);
        let last_two: Vec<(u64, u64)> = window[BUCKETS - 2..]
            .iter()
            .map(|b| (b.deleted, b.failed))
            .collect();
        assert_eq!(last_two, [(7, 1), (7, 0)]);
        assert_eq!(window[BUCKETS - 1].deleted, 7);
        // Fifteen minutes later the first counts are gone, and a new count
        // in the same slot starts from zero.
        let later = t0 + (BUCKETS as i64 + 1) * BUCKET_MS;
        activity.add_at(later, 1, 0);
        let window = activity.window_at(later);
        assert_eq!(window.iter().map(|b| b.deleted).sum::<u64>(), 1);
        assert!(window
            .windows(2)
            .all(|w| w[1].start_ms - w[0].start_ms == BUCKET_MS));
    }
}

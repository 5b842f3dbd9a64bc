//! The fast lane's room (README, "Fast lane"): not an actor, the atomic
//! the dispatcher and the recorder share.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The fast lane (README, "Fast lane"), shared by the dispatcher, which
/// publishes how many ids its free executors can take now, and the
/// recorder, which inserts that many ids recorded due now already leased
/// ([`crate::db::queries::record::Lease`]) and hands them over with [`Leased`].
#[derive(Clone)]
pub(crate) struct FastLane {
    /// Ids the lane may take now (0: closed).
    room: Arc<AtomicUsize>,
}

impl FastLane {
    pub(crate) fn new() -> FastLane {
        FastLane {
            room: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Sets the room (the dispatcher, after every event).
    pub(crate) fn publish(&self, room: usize) {
        self.room.store(room, Ordering::Relaxed);
    }

    /// Takes the room for `n` ids, closing the lane until the dispatcher
    /// has the batch (one batch on its way at a time); `false` when there
    /// is not that much room.
    pub(crate) fn take(&self, n: usize) -> bool {
        n > 0
            && self
                .room
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |room| {
                    (n <= room).then_some(0)
                })
                .is_ok()
    }
}

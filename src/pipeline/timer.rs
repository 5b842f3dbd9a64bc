//! TimerActor: wakes the dispatcher every `tick_ms`.
//!
//! The tick only finds work nobody announced: delayed requests coming due,
//! retries after backoff, leases of dead instances expiring, and requests
//! recorded by other instances. Work recorded here is announced at once by
//! the RecordActor's nudge.

use std::time::Duration;

use actix::prelude::*;

use super::dispatcher::{DispatcherActor, Tick};

/// Sends [`Tick`] to the dispatcher at a fixed interval.
pub(crate) struct TimerActor {
    dispatcher: Addr<DispatcherActor>,
    every: Duration,
}

impl TimerActor {
    pub(crate) fn new(dispatcher: Addr<DispatcherActor>, every: Duration) -> TimerActor {
        TimerActor { dispatcher, every }
    }
}

impl Actor for TimerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A first tick right away picks up what was left before a restart.
        self.dispatcher.do_send(Tick);
        ctx.run_interval(self.every, |act, _| act.dispatcher.do_send(Tick));
    }
}

/// Stops the timer (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopTimer;

impl Handler<StopTimer> for TimerActor {
    type Result = ();

    fn handle(&mut self, _: StopTimer, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

//! The dashboard's Notifications panel in Chromium: one row per sink with
//! its outbox (pending, dead, the last error), and its "Redeliver dead"
//! button, checked against a webhook receiver that fails, then heals.
//!
//! A child of `dashboard`, so that its path (`dashboard::events::...`) is
//! picked by the `dashboard::` filter `.ci/run` passes.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{click, displayed, text, wait_for_text, wait_for_text_containing, Browser};
use crate::common::receiver::{Answer, Receiver};
use crate::common::{spawn_app, wait_until, Backend};
use crate::notifications::webhook;

#[test]
#[ignore = "needs chromium and chromium-driver (apt-get install chromium chromium-driver); .ci/run installs them and runs it"]
fn the_dashboard_shows_each_sinks_outbox_and_redelivers_its_dead_events() {
    let healthy = Arc::new(AtomicBool::new(false));
    let healed = healthy.clone();
    let receiver = Receiver::start(move |_, _| match healed.load(Ordering::SeqCst) {
        true => Answer::Status(204),
        false => Answer::Status(503),
    });
    let app = spawn_app(Backend::Sqlite, |c| {
        c.webhooks = vec![webhook("mgmt", receiver.url("/hooks"))];
        // The first retry would be 5 s later, past the window: an event is
        // dead after its first try.
        c.webhook_retry_hours = 4.0 / 3600.0;
    });
    let ids = ["hooked-1", "hooked-2"];
    for id in ids {
        app.create_file(id);
    }
    app.record_now(&ids);

    let (app, receiver) = (&app, &receiver);
    let browser = Browser::start();
    browser.run(|c| async move {
        let c = &c;
        c.goto(&app.url("/")).await.unwrap();
        let row = "#sinks-list tr[data-sink='mgmt']";
        wait_for_text(c, &format!("{row} td.dead"), "2").await;
        wait_for_text(c, &format!("{row} td.pending"), "0").await;
        wait_for_text_containing(c, &format!("{row} td.error-text"), &["503"]).await;
        wait_for_text_containing(c, row, &["mgmt"]).await;
        assert!(!displayed(c, "#sinks-empty").await, "a sink is configured");
        assert!(!displayed(c, "#error").await, "no error");
        assert!(
            receiver.received().iter().all(|r| r.status == Some(503)),
            "nothing was delivered yet"
        );

        healthy.store(true, Ordering::SeqCst);
        click(c, &format!("{row} button.redeliver")).await;
        wait_for_text_containing(c, "#notice", &["2 dead events of mgmt due again"]).await;
        wait_for_text(c, &format!("{row} td.dead"), "0").await;
        wait_until("both events are delivered", || {
            let delivered: BTreeSet<String> = receiver
                .received()
                .iter()
                .filter(|r| r.status == Some(204))
                .map(|r| {
                    r.json()["data"]["id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect();
            delivered == BTreeSet::from(ids.map(String::from))
        });
        // Nothing left to send: no error, and nothing to redeliver.
        wait_for_text(c, &format!("{row} td.pending"), "0").await;
        wait_for_text(c, &format!("{row} td.error-text"), "—").await;
        let button = c
            .find(fantoccini::Locator::Css(&format!("{row} button.redeliver")))
            .await
            .unwrap();
        assert!(!button.is_enabled().await.unwrap(), "no dead event left");
        assert_eq!(text(c, "#error").await.unwrap(), "", "no error");
    });
}

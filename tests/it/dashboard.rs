//! The dashboard in a real browser: Debian's headless Chromium, driven
//! through WebDriver (chromedriver, started by the test on a free port),
//! against the app running in this process. What the page shows is checked
//! in the page; what its buttons do is checked through the API.
//!
//! Ignored by a plain `cargo test`, which must pass on a machine without a
//! browser; `.ci/run` installs Chromium and runs it with `--include-ignored`.
//! Once asked for, it fails (never skips) when Chromium is missing.

use std::future::Future;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{spawn_app, wait_until, Backend, DEADLINE};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tempfile::TempDir;

/// The Notifications panel (webhooks, purges), in a file of its own.
mod events;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const INSTALL: &str = "apt-get install chromium chromium-driver";

/// chromedriver on a free port of 127.0.0.1, in a process group of its own
/// so that the browsers it starts go with it: killed on drop, even when the
/// test panics.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Chromedriver {
    fn start() -> Chromedriver {
        for program in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: this test needs Chromium and its WebDriver ({INSTALL})"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER} ({INSTALL}): {e}"));
        let mut driver = Chromedriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let status = format!("{}/status", driver.url);
        wait_until("chromedriver is ready", || {
            if let Ok(Some(exit)) = driver.child.try_wait() {
                panic!("{CHROMEDRIVER} exited at start-up: {exit}");
            }
            ureq::get(&status)
                .call()
                .ok()
                .and_then(|r| r.into_json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true)
        });
        driver
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The whole group: chromedriver and any browser left behind.
        let group = -(self.child.id() as libc::pid_t);
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// A headless Chromium session with a fresh profile, and the runtime its
/// WebDriver client runs on. Dropping it ends the session, then the driver.
struct Browser {
    client: Option<Client>,
    runtime: tokio::runtime::Runtime,
    _driver: Chromedriver,
    /// Removed after the driver and its browsers are gone.
    _profile: TempDir,
}

impl Browser {
    fn start() -> Browser {
        let driver = Chromedriver::start();
        let profile = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // No network beyond the app on 127.0.0.1: everything Chromium would
        // fetch by itself is turned off.
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1100",
            "--lang=en-US",
        ]
        .map(String::from)
        .into_iter()
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let capabilities = json!({
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args }
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = runtime.block_on(async {
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities)
                .connect(&driver.url)
                .await
                .unwrap_or_else(|e| panic!("Chromium does not start through {CHROMEDRIVER}: {e}"))
        });
        Browser {
            client: Some(client),
            runtime,
            _driver: driver,
            _profile: profile,
        }
    }

    /// Runs `test` with the session.
    fn run<F: Future<Output = ()>>(&self, test: impl FnOnce(Client) -> F) {
        let client = self.client.clone().expect("a session");
        self.runtime.block_on(test(client));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            });
        }
    }
}

/// Polls `attempt` every 50 ms until it gives a value; after [`DEADLINE`],
/// fails with `what` and the last thing seen.
async fn eventually<T, F>(what: &str, mut attempt: impl FnMut() -> F) -> T
where
    F: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(seen) if start.elapsed() > DEADLINE => {
                panic!("timed out waiting for: {what} (last seen: {seen})")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The rendered text of the element at `css` ("" when it is not displayed).
async fn text(c: &Client, css: &str) -> Result<String, String> {
    let element = c.find(Locator::Css(css)).await.map_err(|e| e.to_string())?;
    element.text().await.map_err(|e| e.to_string())
}

/// Waits until the element at `css` shows exactly `expected`.
async fn wait_for_text(c: &Client, css: &str, expected: &str) {
    eventually(&format!("{css} shows {expected:?}"), || async {
        let seen = text(c, css).await?;
        if seen == expected {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await
}

/// Waits until the element at `css` shows text containing each of `parts`.
async fn wait_for_text_containing(c: &Client, css: &str, parts: &[&str]) -> String {
    eventually(&format!("{css} shows {parts:?}"), || async {
        let seen = text(c, css).await?;
        if parts.iter().all(|p| seen.contains(p)) {
            Ok(seen)
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await
}

/// Waits until `css` matches `n` elements.
async fn wait_for_count(c: &Client, css: &str, n: usize) {
    eventually(&format!("{n} elements match {css}"), || async {
        let found = c
            .find_all(Locator::Css(css))
            .await
            .map_err(|e| e.to_string())?;
        if found.len() == n {
            Ok(())
        } else {
            Err(format!("{} elements", found.len()))
        }
    })
    .await
}

/// Waits until `css` matches at least one element.
async fn wait_for_any(c: &Client, css: &str) {
    eventually(&format!("an element matches {css}"), || async {
        match c.find_all(Locator::Css(css)).await {
            Ok(found) if !found.is_empty() => Ok(()),
            Ok(_) => Err("none".into()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
}

/// Clicks the element at `css`, finding it again if the page re-rendered it
/// in between (a refresh replaces the failed list's rows: "stale element").
async fn click(c: &Client, css: &str) {
    eventually(&format!("a click on {css}"), || async {
        let element = c.find(Locator::Css(css)).await.map_err(|e| e.to_string())?;
        element.click().await.map_err(|e| e.to_string())
    })
    .await
}

async fn type_into(c: &Client, css: &str, text: &str) {
    let input = c.find(Locator::Css(css)).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(text).await.unwrap();
}

async fn displayed(c: &Client, css: &str) -> bool {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap()
}

/// Where the screenshot goes: `$CARGO_TARGET_DIR/dashboard.png`, else
/// `target/dashboard.png`, relative to the crate.
fn screenshot_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into());
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(target)
        .join("dashboard.png")
}

/// `POST path` with a bearer token.
fn post_with_token(
    app: &crate::common::TestApp,
    path: &str,
    token: &str,
    body: Value,
) -> crate::common::Reply {
    crate::common::try_call(
        ureq::post(&app.url(path)).set("Authorization", &format!("Bearer {token}")),
        Some(body),
    )
    .unwrap()
}

#[test]
#[ignore = "needs chromium and chromium-driver (apt-get install chromium chromium-driver); .ci/run installs them and runs it"]
fn the_dashboard_shows_the_queue_finds_requests_and_retries_or_cancels_failed_ones() {
    // One attempt each: a request whose file cannot be deleted fails for good.
    let app = spawn_app(Backend::Sqlite, |c| c.max_attempts = 1);
    let later = ["later-1", "later-2", "later-3"];
    assert_eq!(
        app.record(&later, json!({ "delay_secs": 3600 })).status,
        202
    );
    // Due now: 24 already gone (done at once), 3 blocked by a directory
    // where a file should be (failed, with the storage's own error).
    let failed = ["failed-a", "failed-b", "failed-c"];
    for id in failed {
        app.block(id);
    }
    let mut due: Vec<String> = (0..24).map(|i| format!("gone-{i:02}")).collect();
    due.extend(failed.map(String::from));
    let due: Vec<&str> = due.iter().map(String::as_str).collect();
    assert_eq!(app.record(&due, json!({})).status, 202);
    wait_until("the due requests are done or failed", || {
        let stats = app.get("/v1/stats").json();
        stats["done"] == 24 && stats["failed"] == 3
    });

    let app = &app;
    let browser = Browser::start();
    browser.run(|c| async move {
        let c = &c;
        c.goto(&app.url("/")).await.unwrap();
        wait_for_text(c, "#count-pending", "3").await;
        for (css, expected) in [
            ("#count-running", "0"),
            ("#count-failed", "3"),
            ("#count-done", "24"),
            ("#oldest-due", "none"),
            ("#count-urgent", "0"),
            ("#oldest-urgent", "none waiting"),
            ("#paused-state", "Deleting"),
        ] {
            wait_for_text(c, css, expected).await;
        }
        // The storage target, as this instance sees it.
        wait_for_text(c, "#targets li[data-target=default] .pill", "Ready").await;
        wait_for_text_containing(c, "#targets li[data-target=default]", &["default", "local"])
            .await;
        assert!(!displayed(c, "#token-form").await, "no token needed");
        assert!(!displayed(c, "#error").await, "no error");
        // No webhook or purge: the Notifications panel says so.
        wait_for_text(c, "#sinks-empty", "No webhooks or purges are configured.").await;
        assert!(!displayed(c, "#sinks-table").await);

        // The chart: this instance's 24 deletions and 3 failed attempts.
        // (Buckets are 10 s wide: these may straddle two.)
        wait_for_any(c, "#chart rect.bar").await;
        wait_for_any(c, "#chart rect.bar-failed").await;
        wait_for_text_containing(c, "#chart-summary", &["24 deleted", "3 failed"]).await;

        // The failed list: one row per failed request, with its error.
        wait_for_count(c, "#failed-list tr[data-id]", 3).await;
        let error = app.get("/v1/deletions/failed-a").json()["last_error"]
            .as_str()
            .unwrap()
            .to_owned();
        wait_for_text_containing(c, "#failed-list tr[data-id='failed-a']", &[&error]).await;

        // Search: a pending request, a missing one, an invalid id.
        type_into(c, "#search-input", "later-2").await;
        click(c, "#search-button").await;
        wait_for_text_containing(c, "#search-result", &["later-2", "pending", "v1"]).await;

        let png = c.screenshot().await.unwrap();
        let path = screenshot_path();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());

        type_into(c, "#search-input", "never-recorded").await;
        click(c, "#search-button").await;
        wait_for_text_containing(c, "#search-result", &["Not found", "never-recorded"]).await;
        type_into(c, "#search-input", "a/b").await;
        click(c, "#search-button").await;
        wait_for_text_containing(c, "#search-result", &["invalid video id", "HTTP 400"]).await;

        // Pause first, so that what is retried stays pending.
        click(c, "#pause-button").await;
        wait_for_text(c, "#paused-state", "Paused").await;
        assert_eq!(app.get("/v1/stats").json()["paused"], true);

        click(c, "#failed-list tr[data-id='failed-a'] .retry").await;
        wait_until("failed-a is pending again", || {
            app.get("/v1/deletions/failed-a").json()["state"] == "pending"
        });
        wait_for_count(c, "#failed-list tr[data-id]", 2).await;
        wait_for_text(c, "#count-failed", "2").await;

        click(c, "#failed-list tr[data-id='failed-b'] .cancel").await;
        wait_until("failed-b is cancelled", || {
            app.get("/v1/deletions/failed-b").status == 404
        });
        wait_for_count(c, "#failed-list tr[data-id]", 1).await;

        // Retry all, once confirmed.
        click(c, "#retry-all").await;
        eventually("the confirmation is accepted", || async {
            c.accept_alert().await.map_err(|e| e.to_string())
        })
        .await;
        wait_until("failed-c is pending again", || {
            app.get("/v1/deletions/failed-c").json()["state"] == "pending"
        });
        wait_for_text_containing(c, "#notice", &["1 failed request back to pending"]).await;
        wait_for_count(c, "#failed-list tr[data-id]", 0).await;
        wait_for_text(c, "#count-pending", "5").await;

        click(c, "#resume-button").await;
        wait_for_text(c, "#paused-state", "Deleting").await;
        assert_eq!(app.get("/v1/stats").json()["paused"], false);
    });
}

#[test]
#[ignore = "needs chromium and chromium-driver (apt-get install chromium chromium-driver); .ci/run installs them and runs it"]
fn with_api_tokens_the_dashboard_shows_only_a_token_prompt_until_given_a_valid_one() {
    let app = spawn_app(Backend::Sqlite, |c| c.api_tokens = vec!["s3cret".into()]);
    let recorded = post_with_token(
        &app,
        "/v1/deletions",
        "s3cret",
        json!({ "ids": ["tok-1", "tok-2"], "delay_secs": 3600 }),
    );
    assert_eq!(recorded.status, 202);

    let app = &app;
    let browser = Browser::start();
    browser.run(|c| async move {
        let c = &c;
        c.goto(&app.url("/")).await.unwrap();
        wait_for_text_containing(c, "#token-message", &["requires an API token"]).await;
        assert!(displayed(c, "#token-input").await);
        assert!(!displayed(c, "#main").await, "nothing but the prompt");
        for count in ["#count-pending", "#count-failed", "#failed-list"] {
            assert_eq!(text(c, count).await.unwrap(), "", "{count} is not shown");
        }
        let page = c.source().await.unwrap();
        assert!(!page.contains("tok-1"), "no data in the page");

        type_into(c, "#token-input", "wrong").await;
        click(c, "#token-form button[type=submit]").await;
        wait_for_text_containing(c, "#token-message", &["not accepted"]).await;
        assert!(!displayed(c, "#main").await, "still nothing but the prompt");

        type_into(c, "#token-input", "s3cret").await;
        click(c, "#token-form button[type=submit]").await;
        wait_for_text(c, "#count-pending", "2").await;
        assert!(!displayed(c, "#token-form").await, "the prompt is gone");
        // The Notifications panel's call carries the token too.
        wait_for_text(c, "#sinks-empty", "No webhooks or purges are configured.").await;
        assert!(!displayed(c, "#token-form").await, "still unlocked");

        // The token is kept for the tab: a reload goes straight in.
        c.refresh().await.unwrap();
        wait_for_text(c, "#count-pending", "2").await;
        assert!(!displayed(c, "#token-form").await);
    });
}

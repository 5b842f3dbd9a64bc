//! The integration tests, in one binary: the real server (in this process
//! or as a child) on `127.0.0.1:0`, a real database and a real video root
//! or bucket, talked to over HTTP. `common` is the harness; every other
//! module is one area, and its `//!` says what the area covers.
//!
//! One binary, not one per file (as cargo and rust-analyzer do): the harness
//! compiles once and the tests link once. A test's path starts with its
//! area (`receipts::sqlite::...`), so a filter picks an area, a backend of
//! it, or a test:
//!
//! ```sh
//! cargo test --all-features --test it -- receipts::
//! cargo test --all-features --test it -- receipts::postgres::
//! cargo test --all-features --test it -- --include-ignored drop_in:: dashboard:: failover:: partition:: held:: read_only::
//! cargo test --all-features --test it -- --include-ignored galera::
//! ```
//!
//! The last two lines are how CI runs the ignored tests (the Go client,
//! the dashboard in Chromium, a PostgreSQL failover, long partitions; then
//! a Galera cluster alone, whose nodes evict a peer silent for 3 s), which
//! a plain `cargo test` leaves out.

// First, so that its macros (`backend_tests!`, `storage_tests!`) are in
// scope in every area below.
#[macro_use]
mod common;

mod api;
mod cli;
mod cluster;
mod controls;
mod crash;
mod dashboard;
mod drop_in;
mod export;
#[cfg(feature = "postgres")]
mod failover;
mod fast_lane;
#[cfg(feature = "postgres")]
mod fencing;
#[cfg(feature = "mysql")]
mod galera;
mod hardening;
#[cfg(any(feature = "mysql", feature = "postgres"))]
mod held;
mod layout;
#[cfg(feature = "s3")]
mod moto_harness;
mod named_paths;
mod notifications;
#[cfg(feature = "s3")]
mod object_storage;
mod observability;
#[cfg(any(feature = "mysql", feature = "postgres"))]
mod outage;
mod outbox;
#[cfg(any(feature = "mysql", feature = "postgres"))]
mod partition;
mod pipeline;
#[cfg(feature = "postgres")]
mod plans;
mod priority;
#[cfg(feature = "mysql")]
mod read_only;
mod receipts;
mod root_safety;
mod secrets;
mod storage_faults;
#[cfg(feature = "s3")]
mod targets;
#[cfg(feature = "s3")]
mod versioned_buckets;
#[cfg(feature = "s3")]
mod versioned_faults;

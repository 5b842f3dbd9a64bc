//! The command line: `video-scheduler [--config FILE] [serve|migrate|enqueue|stats|retry|cancel|pause|resume|receipts|config]`.
//!
//! Only `serve` and `migrate` change the schema: the other commands refuse
//! to run on a database whose schema is behind, so that a newer CLI never
//! migrates a database that older running instances share.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::clock::now_ms;
use crate::config::Config;
use crate::db::models::{EventState, Source, State};
use crate::db::queries::{self, controls, receipts, record::RecordRequest};
use crate::db::{bulk, Db};
use crate::http::events::EventView;
use crate::http::views::ReceiptView;
use crate::paths::PathSpec;
use crate::paths::MAX_REQUEST_PATHS;
use crate::pipeline::record::RecordWithPaths;
use crate::schedule;
use crate::video_id::VideoId;

#[derive(Debug, Parser)]
#[command(
    name = "video-scheduler",
    version,
    about = "A durable deletion scheduler for video files"
)]
pub(crate) struct Cli {
    /// Configuration file [default: ./conf.json when it exists].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the HTTP server and the deletion pipeline (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Record deletion requests: ids as arguments, or one per line on
    /// stdin; a line may also be `{"id": "v1", "paths": ["web/3f2a-720.mp4", "hls/3f2a/"]}`
    /// to name files the templates cannot.
    Enqueue {
        ids: Vec<String>,
        /// Do not delete before this many seconds from now.
        #[arg(long, default_value_t = 0)]
        delay_secs: u64,
        /// Urgent (a takedown): claimed before every normal request, and
        /// not held back by `max_deletions_per_sec`.
        #[arg(long)]
        urgent: bool,
    },
    /// Print counts by state as JSON.
    Stats {
        /// Count the tables again and correct the kept counts (after rows
        /// were written by hand; scans the tables).
        #[arg(long)]
        recount: bool,
    },
    /// Move requests back to pending.
    Retry {
        /// Every request in state `failed` (except those whose id is not a
        /// valid id: they can only be cancelled).
        #[arg(long, required = true)]
        failed: bool,
    },
    /// Cancel requests.
    Cancel(CancelArgs),
    /// Stop deleting on every instance sharing the database (recording goes on).
    Pause,
    /// Delete again after `pause`.
    Resume,
    /// Write the receipts of completed requests as JSON lines, oldest first.
    Receipts {
        /// Only receipts completed at or after this time (RFC 3339).
        #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
        since: Option<i64>,
        /// Only receipts completed before this time (RFC 3339).
        #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
        until: Option<i64>,
    },
    /// Write the outbox's pending events (or, with --dead, its dead ones)
    /// as JSON lines, in id order.
    Events {
        /// Dead events: their retries ran out.
        #[arg(long)]
        dead: bool,
    },
    /// Make an event (or every dead one) due for delivery now.
    Redeliver(RedeliverArgs),
    /// Print the configuration in effect (file, then environment) as JSON,
    /// with secrets and the database password shown as `***`.
    Config,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct CancelArgs {
    /// Every request in state `failed`.
    #[arg(long)]
    failed: bool,
    /// Every request whose id is not a valid video id (rows left by the Go
    /// scheduler, which did not check ids).
    #[arg(long)]
    invalid: bool,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct RedeliverArgs {
    /// The event's id (`id` in `events`, `evt_<id>` in its webhook-id).
    id: Option<i64>,
    /// Every dead event.
    #[arg(long)]
    dead: bool,
}

/// An RFC 3339 time as epoch milliseconds.
fn parse_time(text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{e} (expected RFC 3339, e.g. 2026-12-01T00:00:00Z)"))
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    crate::logging::init();
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config),
        Command::Migrate => migrate(&config),
        Command::Enqueue {
            ids,
            delay_secs,
            urgent,
        } => enqueue(&config, ids, (delay_secs, urgent)),
        Command::Stats { recount } => stats(&config, recount),
        Command::Retry { failed: _ } => retry_failed(&config),
        Command::Cancel(CancelArgs { failed: true, .. }) => cancel_failed(&config),
        Command::Cancel(CancelArgs { .. }) => cancel_invalid(&config),
        Command::Pause => set_paused(&config, true),
        Command::Resume => set_paused(&config, false),
        Command::Receipts { since, until } => export_receipts(&config, since, until),
        Command::Events { dead } => list_events(&config, dead),
        Command::Redeliver(RedeliverArgs { id, .. }) => redeliver(&config, id),
        Command::Config => serde_json::to_string_pretty(&config.redacted())
            .map(|json| println!("{json}"))
            .map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // A configuration the storage refuses (a restart cannot help)
            // exits as a configuration error does: systemd does not
            // restart it (`RestartPreventExitStatus=2`).
            let refused = matches!(
                e.downcast_ref::<crate::StartError>(),
                Some(crate::StartError::Storage(open)) if open.refused
            );
            if refused {
                return ExitCode::from(2);
            }
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(config.shutdown_timeout_secs);
    actix_web::rt::System::new().block_on(async move {
        let running = crate::start(config).await?;
        running.wait(timeout).await?;
        Ok(())
    })
}

/// The database of an operator command: it must be migrated already.
fn open(config: &Config) -> anyhow::Result<Db> {
    let db = Db::connect(&config.database_url, 1)?;
    db.require_migrated()?;
    Ok(db)
}

fn migrate(config: &Config) -> anyhow::Result<()> {
    let db = Db::connect(&config.database_url, 1)?;
    let applied = db.migrate()?;
    println!("{} migrations applied", applied.len());
    Ok(())
}

/// Longest piece of a bad input line quoted back in an error.
const QUOTE_MAX: usize = 80;

/// `s` for an error message: quoted, and cut if long (a stray binary file on
/// stdin must not flood the terminal).
fn quote(s: &str) -> String {
    match s.char_indices().nth(QUOTE_MAX) {
        Some((cut, _)) => format!("{:?}... ({} bytes)", &s[..cut], s.len()),
        None => format!("{s:?}"),
    }
}

fn enqueue(
    config: &Config,
    args: Vec<String>,
    (delay_secs, urgent): (u64, bool),
) -> anyhow::Result<()> {
    let now = now_ms();
    let not_before = schedule::not_before_ms(now, Some(delay_secs), None)
        .map_err(|e| anyhow::anyhow!("--{}", e.to_string().replace('_', "-")))?;
    let raw = if args.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(|line| line.trim().to_owned())
            .filter(|line| !line.is_empty())
            .collect()
    } else {
        args
    };
    // Validate everything first: a bad id or path anywhere changes nothing.
    let items = raw
        .iter()
        .map(|s| parse_entry(s).map_err(|e| anyhow::anyhow!("{}: {e}", quote(s))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let urgent: Vec<VideoId> = match urgent {
        true => items.iter().map(|(id, _)| id.clone()).collect(),
        false => Vec::new(),
    };
    let db = open(config)?;
    let (accepted, total) = if items.iter().any(|(_, paths)| !paths.is_empty()) {
        let record = RecordWithPaths::new(items, not_before, Source::Cli, None)
            .urgent(urgent)
            .into_request();
        let total = record.ids.len();
        let accepted = db
            .write(|c| queries::record::record_with_paths(c, &record, now))?
            .map_err(anyhow::Error::msg)?;
        (accepted, total)
    } else {
        let mut ids: Vec<VideoId> = items.into_iter().map(|(id, _)| id).collect();
        ids.sort_unstable();
        ids.dedup();
        let total = ids.len();
        let urgent = match urgent.is_empty() {
            true => Vec::new(),
            false => ids.clone(),
        };
        let requests = [RecordRequest {
            urgent,
            ids,
            not_before,
            counted: true,
            source: Source::Cli,
            request_id: None,
            paths: Vec::new(),
        }];
        (
            db.write(|c| queries::record::record_many(c, &requests, now))?
                .total,
            total,
        )
    };
    println!("accepted {accepted}, already queued {}", total - accepted);
    Ok(())
}

/// One entry of `enqueue`: a plain id, or a JSON object naming its paths.
fn parse_entry(text: &str) -> Result<(VideoId, Vec<String>), String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Item {
        id: String,
        #[serde(default)]
        paths: Vec<String>,
    }
    if !text.starts_with('{') {
        return Ok((VideoId::parse(text).map_err(|e| e.to_string())?, Vec::new()));
    }
    let item: Item = serde_json::from_str(text).map_err(|e| format!("not an item: {e}"))?;
    let id = VideoId::parse(&item.id).map_err(|e| format!("id: {e}"))?;
    if item.paths.len() > MAX_REQUEST_PATHS {
        return Err(format!(
            "paths: at most {MAX_REQUEST_PATHS}, got {}",
            item.paths.len()
        ));
    }
    for (j, path) in item.paths.iter().enumerate() {
        PathSpec::parse_request(path).map_err(|e| format!("paths[{j}]: {e}"))?;
    }
    Ok((id, item.paths))
}

fn stats(config: &Config, recount: bool) -> anyhow::Result<()> {
    let db = open(config)?;
    if recount {
        let counted = db.write(queries::counts::recount)?;
        eprintln!(
            "recounted: {} queued, {} failed, {} receipts",
            counted.queued, counted.failed, counted.done
        );
    }
    let stats = db.read(|c| queries::counts::stats(c, now_ms()))?;
    println!("{}", serde_json::to_string_pretty(&stats)?);
    Ok(())
}

fn retry_failed(config: &Config) -> anyhow::Result<()> {
    let db = open(config)?;
    let moved = bulk::retry_failed(&db, now_ms())?;
    println!("{moved} failed requests moved back to pending");
    Ok(())
}

fn cancel_invalid(config: &Config) -> anyhow::Result<()> {
    let db = open(config)?;
    let cancelled = bulk::cancel_invalid(&db, now_ms(), &crate::notify::outbox_sinks(config))?;
    for id in &cancelled {
        println!("cancelled {}", quote(id));
    }
    println!("{} requests with an invalid id cancelled", cancelled.len());
    Ok(())
}

fn cancel_failed(config: &Config) -> anyhow::Result<()> {
    let db = open(config)?;
    let cancelled = bulk::cancel(
        &db,
        State::Failed,
        None,
        &crate::notify::outbox_sinks(config),
    )?;
    println!("{cancelled} failed requests cancelled");
    Ok(())
}

fn set_paused(config: &Config, paused: bool) -> anyhow::Result<()> {
    let db = open(config)?;
    db.write(|c| controls::set_paused(c, paused, now_ms()))?;
    println!("{}", serde_json::json!({ "paused": paused }));
    Ok(())
}

/// Receipts per page of the export: memory stays the same whatever their
/// number.
const EXPORT_PAGE: usize = 1000;

fn export_receipts(config: &Config, since: Option<i64>, until: Option<i64>) -> anyhow::Result<()> {
    use std::io::Write;
    let db = open(config)?;
    let (since, until) = (since.unwrap_or(i64::MIN), until.unwrap_or(i64::MAX));
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut after: Option<(i64, String)> = None;
    loop {
        let page = db.read(|c| {
            let after = after.as_ref().map(|(at, id)| (*at, id.as_str()));
            receipts::completed_between(c, since, until, after, EXPORT_PAGE)
        })?;
        for receipt in &page {
            serde_json::to_writer(&mut out, &ReceiptView::from(receipt.clone()))?;
            out.write_all(b"\n")?;
        }
        match page.last() {
            Some(last) if page.len() == EXPORT_PAGE => {
                after = Some((last.completed_at, last.id.clone()))
            }
            _ => break,
        }
    }
    out.flush()?;
    Ok(())
}

/// `events [--dead]`: JSON lines, as `GET /v1/events` shows them.
fn list_events(config: &Config, dead: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let db = open(config)?;
    let state = match dead {
        true => EventState::Dead,
        false => EventState::Pending,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut after = None;
    loop {
        let page = db.read(|c| queries::events::list(c, Some(state), None, after, EXPORT_PAGE))?;
        for event in &page {
            serde_json::to_writer(&mut out, &EventView::from(event.clone()))?;
            out.write_all(b"\n")?;
        }
        match page.last() {
            Some(last) if page.len() == EXPORT_PAGE => after = Some(last.id),
            _ => break,
        }
    }
    out.flush()?;
    Ok(())
}

/// `redeliver ID|--dead`.
fn redeliver(config: &Config, id: Option<i64>) -> anyhow::Result<()> {
    let db = open(config)?;
    match id {
        Some(id) => match db.write(|c| queries::events::redeliver(c, id, now_ms()))? {
            Some(event) => println!("event {id} ({}) due for delivery now", event.sink),
            None => anyhow::bail!("no event {id}"),
        },
        None => {
            let n = db.write(|c| queries::events::redeliver_dead(c, None, now_ms()))?;
            println!("{n} dead events due for delivery now");
        }
    }
    Ok(())
}

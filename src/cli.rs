//! The command line: `video-scheduler [--config FILE] [serve|migrate|enqueue|stats|retry --failed]`.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::db::queries::{self, RecordRequest};
use crate::db::{now_ms, Db};
use crate::video_id::VideoId;

#[derive(Debug, Parser)]
#[command(
    name = "video-scheduler",
    version,
    about = "A durable deletion scheduler for video files"
)]
pub struct Cli {
    /// Configuration file [default: ./conf.json when it exists].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server and the deletion pipeline (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Record deletion requests: ids as arguments, or one per line on stdin.
    Enqueue {
        ids: Vec<String>,
        /// Do not delete before this many seconds from now.
        #[arg(long, default_value_t = 0)]
        delay_secs: u64,
    },
    /// Print counts by state as JSON.
    Stats,
    /// Move requests back to pending.
    Retry {
        /// Every request in state `failed`.
        #[arg(long, required = true)]
        failed: bool,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
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
        Command::Enqueue { ids, delay_secs } => enqueue(&config, ids, delay_secs),
        Command::Stats => stats(&config),
        Command::Retry { failed: _ } => retry_failed(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
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

fn open(config: &Config) -> anyhow::Result<Db> {
    let db = Db::connect(&config.database_url, 1)?;
    db.migrate()?;
    Ok(db)
}

fn migrate(config: &Config) -> anyhow::Result<()> {
    let db = Db::connect(&config.database_url, 1)?;
    let applied = db.migrate()?;
    println!("{} migrations applied", applied.len());
    Ok(())
}

fn enqueue(config: &Config, args: Vec<String>, delay_secs: u64) -> anyhow::Result<()> {
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
    // Validate everything first: a bad id anywhere changes nothing.
    let mut ids = raw
        .iter()
        .map(|s| VideoId::parse(s).map_err(|e| anyhow::anyhow!("{s:?}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    ids.sort_unstable();
    ids.dedup();
    let db = open(config)?;
    let now = now_ms();
    let total = ids.len();
    let request = RecordRequest {
        ids,
        not_before: now.saturating_add(delay_secs.saturating_mul(1000) as i64),
        counted: true,
    };
    let requests = [request];
    let accepted = db.write(|c| queries::record_many(c, &requests, now))?.total;
    println!("accepted {accepted}, already queued {}", total - accepted);
    Ok(())
}

fn stats(config: &Config) -> anyhow::Result<()> {
    let db = open(config)?;
    let stats = db.read(|c| queries::stats(c, now_ms()))?;
    println!("{}", serde_json::to_string_pretty(&stats)?);
    Ok(())
}

fn retry_failed(config: &Config) -> anyhow::Result<()> {
    let db = open(config)?;
    let moved = db.write(|c| queries::retry_all_failed(c, now_ms()))?;
    println!("{moved} failed requests moved back to pending");
    Ok(())
}

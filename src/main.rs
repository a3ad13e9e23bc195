//! The `attrib` binary: `run`, `demo`, `replay` and helpers.

use anyhow::{Context, Result};
use attrib::ops::settings::{LogFormat, Settings};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

// Journeys and outputs allocate many small strings; mimalloc handles that well.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "attrib",
    version,
    about = "Event-stream attribution processor for partnership marketing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the processor against Kafka.
    Run {
        /// TOML settings file; every key can be overridden by an ATTRIB_* variable.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Start an embedded mock Kafka cluster, write synthetic traffic, process it and print a summary.
    Demo {
        /// Leave the broker and the processor running and print their addresses.
        #[arg(long)]
        keep_running: bool,
        /// Number of clicks to generate.
        #[arg(long, default_value_t = 20_000)]
        clicks: usize,
    },
    /// Apply a JSONL file of records with the same engine, without Kafka.
    Replay {
        /// Input: one `{"topic":…,"key":…,"value":…}` per line (`-` for stdin).
        input: PathBuf,
        /// Output file (default: stdout).
        #[arg(long)]
        output: Option<PathBuf>,
        /// TOML settings file, as for `run`: replay honours the settings that change output
        /// (`identity.stitching`, `limits`, `retention_margin_days`); ATTRIB_* variables
        /// override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Write the demo's synthetic workload as `replay` lines (for trying replay and for benchmarks).
    Generate {
        /// Number of clicks.
        #[arg(long, default_value_t = 900_000)]
        clicks: usize,
        /// Number of devices (journeys); conversions are about one per five devices.
        #[arg(long, default_value_t = 500_000)]
        devices: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Print the effective settings (file + environment) as TOML, secrets as "***", or the error.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
        /// List every setting instead: its key in the file, its environment variable, its
        /// default.
        #[arg(long)]
        list: bool,
    },
}

/// Starts logging with a `log_level` filter, refused (not replaced) when invalid. JSON lines
/// carry the message and the event's fields at the top level; plain lines are coloured only
/// on a terminal.
fn init_logs(format: LogFormat, level: &str) -> Result<()> {
    use std::io::IsTerminal;
    attrib::ops::settings::check_log_filter(level)?;
    let filter = tracing_subscriber::EnvFilter::try_new(level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Plain => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    Ok(())
}

/// Whether errors that end the process are written as JSON: when JSON logs are asked for
/// (`ATTRIB_LOG_FORMAT=json`, or `log_format = "json"` in the settings already read).
static JSON_ERRORS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if std::env::var("ATTRIB_LOG_FORMAT").is_ok_and(|f| f.trim().eq_ignore_ascii_case("json")) {
        JSON_ERRORS.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            std::process::ExitCode::FAILURE
        }
    }
}

/// Writes the error that ends the process in the configured log format: a JSON line like the
/// logs' (`level`, `message`), or `Error: …` as plain text.
fn report(e: &anyhow::Error) {
    let message = format!("{e:#}");
    if JSON_ERRORS.load(std::sync::atomic::Ordering::Relaxed) {
        let line = serde_json::json!({
            "timestamp": attrib::model::time::format_rfc3339(attrib::model::time::now_ms()),
            "level": "ERROR",
            "message": message,
            "target": "attrib",
        });
        eprintln!("{line}");
    } else {
        eprintln!("Error: {message}");
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run { config } => {
            let settings = Settings::load(config.as_deref())?;
            JSON_ERRORS.store(
                settings.log_format == LogFormat::Json,
                std::sync::atomic::Ordering::Relaxed,
            );
            init_logs(settings.log_format, &settings.log_level)?;
            attrib::runtime::run_until_signal(settings)
        }
        Command::Demo {
            keep_running,
            clicks,
        } => {
            init_logs(
                LogFormat::Plain,
                &std::env::var("ATTRIB_LOG_LEVEL").unwrap_or_else(|_| "warn".into()),
            )?;
            attrib::tools::demo::run(keep_running, clicks)
        }
        Command::Replay {
            input,
            output,
            config,
        } => {
            let settings = Settings::load(config.as_deref())?;
            let options = attrib::tools::replay::ReplayOptions::from_settings(&settings);
            let reader: Box<dyn std::io::BufRead> = if input.as_os_str() == "-" {
                Box::new(std::io::BufReader::new(std::io::stdin()))
            } else {
                let f = std::fs::File::open(&input)
                    .with_context(|| format!("cannot open {}", input.display()))?;
                Box::new(std::io::BufReader::with_capacity(1 << 20, f))
            };
            let writer: Box<dyn std::io::Write> = match &output {
                Some(p) => Box::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("cannot create {}", p.display()))?,
                ),
                None => Box::new(std::io::stdout().lock()),
            };
            let (s, state) = attrib::tools::replay::replay_keeping_state(reader, writer, &options)?;
            // The process exits next: dropping the journeys one by one would only slow it.
            std::mem::forget(state);
            eprintln!(
                "replayed {} lines: {} actions, {} invalid actions, {} dlq",
                s.lines, s.actions, s.invalid_actions, s.dlq
            );
            Ok(())
        }
        Command::Generate {
            clicks,
            devices,
            seed,
        } => {
            use std::io::Write;
            let w = attrib::tools::workload::generate(seed, clicks, devices);
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for r in w.all() {
                writeln!(out, "{}", r.replay_line())?;
            }
            out.flush()?;
            Ok(())
        }
        Command::CheckConfig { list: true, .. } => {
            print!("{}", attrib::ops::settings::list_settings());
            Ok(())
        }
        Command::CheckConfig { config, .. } => {
            let settings = Settings::load(config.as_deref())?;
            print!("{}", toml::to_string(&settings.redacted())?);
            Ok(())
        }
    }
}

//! The `feidan` binary: parses the command line, loads the configuration,
//! sets up logging and calls into the library. Errors get their context here.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use feidan::backtest::{self, GroundTruth};
use feidan::config::{Config, LogFormat};
use feidan::demo::{self, DemoOptions};
use feidan::event::Id;
use feidan::metrics::{self, Health, Metrics};
use feidan::service;
use feidan::simulate::{SimConfig, Simulation};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tracing_subscriber::EnvFilter;

/// feidan: catches key account managers diverting customers' orders (飞单),
/// from sales-activity events on Kafka.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    /// Log format (overrides `log.format`).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

/// Where the configuration comes from (DESIGN §9).
#[derive(Args, Clone, Default)]
struct ConfigArgs {
    /// A TOML file layered over the built-in defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override one key, e.g. `--set detect.win_rate.alpha=0.01` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service against the configured Kafka.
    Run(ConfigArgs),
    /// Everything on one machine: embedded broker, simulated organisation, service.
    Demo {
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long, value_name = "SECONDS")]
        duration: Option<u64>,
        /// Where to serve /metrics, /healthz and /readyz.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
        metrics_addr: SocketAddr,
        /// Print alerts as their JSON lines.
        #[arg(long)]
        json: bool,
        /// Simulated days per second.
        #[arg(long, default_value_t = 20.0)]
        speed: f64,
        /// Seed of the simulated organisation.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Write the simulated organisation's events (and ground-truth labels).
    Simulate {
        /// JSONL file of events.
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "kafka",
            conflicts_with = "kafka"
        )]
        out: Option<PathBuf>,
        /// Produce to the configured input topic instead of a file.
        #[arg(long)]
        kafka: bool,
        /// Labels file (default: beside --out, `<name>.labels.json`).
        #[arg(long, value_name = "FILE")]
        labels: Option<PathBuf>,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[arg(long, default_value_t = 80, value_parser = at_least_one::<usize>)]
        managers: usize,
        /// Managers per team (peer group); the last team may be smaller.
        #[arg(long, default_value_t = 8, value_parser = at_least_one::<usize>)]
        managers_per_team: usize,
        #[arg(long, default_value_t = 10, value_parser = at_least_one::<usize>)]
        accounts_per_manager: usize,
        /// Days simulated, from 2025-01-01.
        #[arg(long, default_value_t = 540, value_parser = at_least_one::<i64>)]
        days: i64,
        /// Share of managers who divert orders (at least one when above 0).
        #[arg(long, default_value_t = 0.1, value_parser = share)]
        diverter_share: f64,
        /// Share of honest accounts that stop ordering for good, per year.
        #[arg(long, default_value_t = 0.08, value_parser = share)]
        churn_per_year: f64,
        /// Share of honest managers who take a month's leave.
        #[arg(long, default_value_t = 0.1, value_parser = share)]
        leave_share: f64,
        /// Share of managers hired partway through, with new accounts.
        #[arg(long, default_value_t = 0.05, value_parser = share)]
        new_hire_share: f64,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Replay a JSONL event file through the engine.
    Backtest {
        /// JSONL events, one per line.
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        /// Ground-truth labels from `simulate`, to score the alerts.
        #[arg(long, value_name = "FILE")]
        labels: Option<PathBuf>,
        /// Write every alert transition here, one JSON line each.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replay once per combination of values and print a table, e.g.
        /// `--sweep detect.win_rate.alpha=0.001,0.0001` (repeatable: a grid).
        #[arg(long, value_name = "KEY=V1,V2,…")]
        sweep: Vec<String>,
        /// Show every verdict on this manager, alerting or not: each
        /// detector's p-value against its bar at each evaluation, and the
        /// closest it came (repeatable).
        #[arg(long, value_name = "MANAGER_ID", conflicts_with = "sweep")]
        trace: Vec<String>,
        /// Show how this account was judged at each evaluation: its silence
        /// against its rhythm and the bar, and how it counted in its
        /// owner's book (repeatable).
        #[arg(long, value_name = "ACCOUNT_ID", conflicts_with = "sweep")]
        trace_account: Vec<String>,
        /// Write the traced verdicts here as JSON lines instead of printing
        /// them after the report.
        #[arg(long, value_name = "FILE")]
        trace_output: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Validate and print the effective configuration (secrets masked).
    CheckConfig(ConfigArgs),
    /// Convert Maven Analytics' public CRM sample into schema-v1 events.
    ImportMavenCrm {
        /// The folder with sales_pipeline.csv, sales_teams.csv and products.csv.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// JSONL file of events.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

impl ConfigArgs {
    fn load(&self) -> Result<Config> {
        let config = Config::load(self.config.as_deref(), &self.overrides, std::env::vars());
        match &self.config {
            Some(path) => config.with_context(|| {
                format!("while loading the configuration from {}", path.display())
            }),
            None => config.context("while loading the configuration"),
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader of the output went away (`feidan backtest … | head`):
        // it has read what it wanted, as with any Unix filter.
        Err(error) if is_broken_pipe(&error) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether `error` is, or was caused by, a write to a pipe whose reader
/// has closed it.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> Result<()> {
    let config_args = match &cli.command {
        Command::Run(c) | Command::CheckConfig(c) => c,
        Command::Demo { config, .. }
        | Command::Simulate { config, .. }
        | Command::Backtest { config, .. }
        | Command::ImportMavenCrm { config, .. } => config,
    };
    let config = config_args.load()?;
    init_logging(
        &config,
        cli.log_format,
        matches!(cli.command, Command::Demo { .. }),
    );

    match cli.command {
        Command::CheckConfig(_) => {
            print!("{}", config.to_masked_toml());
            Ok(())
        }
        Command::Run(_) => runtime()?.block_on(run_service(config)),
        Command::Demo {
            duration,
            metrics_addr,
            json,
            speed,
            seed,
            ..
        } => {
            if speed.is_nan() || speed <= 0.0 {
                bail!("--speed must be above 0");
            }
            let options = DemoOptions {
                duration: duration.map(Duration::from_secs),
                metrics_addr,
                json,
                days_per_second: speed,
                simulation: SimConfig {
                    seed,
                    ..SimConfig::default()
                },
            };
            runtime()?.block_on(async {
                let summary = demo::run(config, options, shutdown_signal(), |line| println!("{line}"))
                    .await
                    .context("while running the demo")?;
                println!(
                    "Demo finished: {} events and {} malformed messages produced, {} alert transitions.",
                    summary.events_produced, summary.malformed_produced, summary.alerts_printed
                );
                Ok(())
            })
        }
        Command::Simulate {
            out,
            kafka,
            labels,
            seed,
            managers,
            managers_per_team,
            accounts_per_manager,
            days,
            diverter_share,
            churn_per_year,
            leave_share,
            new_hire_share,
            ..
        } => {
            let sim = SimConfig {
                seed,
                managers,
                managers_per_team,
                accounts_per_manager,
                days,
                diverter_share,
                churn_per_year,
                leave_share,
                new_hire_share,
                ..SimConfig::default()
            };
            if kafka {
                runtime()?.block_on(simulate_to_kafka(&config, sim))
            } else {
                let out = out.context("--out FILE or --kafka is required")?;
                simulate_to_file(sim, &out, labels)
            }
        }
        Command::ImportMavenCrm { dir, out, .. } => {
            let imported = feidan::import::maven_crm(&dir)
                .with_context(|| format!("while importing {}", dir.display()))?;
            let events = imported.events.iter().map(|event| event.to_json());
            write_json_lines(create(&out)?, &out, events)?;
            eprintln!(
                "Wrote {} events from {} rows to {}; skipped {} rows without an account and {} without an engage date.",
                imported.events.len(),
                imported.rows,
                out.display(),
                imported.skipped_no_account,
                imported.skipped_no_engage_date
            );
            Ok(())
        }
        Command::Backtest {
            input,
            labels,
            output,
            sweep,
            trace,
            trace_account,
            trace_output,
            config: config_args,
        } => {
            size_judging_for_backtest();
            if trace_output.is_some() && trace.is_empty() && trace_account.is_empty() {
                bail!("--trace-output needs --trace MANAGER_ID or --trace-account ACCOUNT_ID");
            }
            if sweep.is_empty() {
                let files = BacktestFiles {
                    input: &input,
                    labels: labels.as_deref(),
                    output: output.as_deref(),
                    trace_output: trace_output.as_deref(),
                };
                let managers: Vec<Id> = trace.iter().map(Id::from).collect();
                let accounts: Vec<Id> = trace_account.iter().map(Id::from).collect();
                let traced = backtest::Traced {
                    managers: &managers,
                    accounts: &accounts,
                };
                run_backtest(&config, &files, traced)
            } else {
                run_sweep(&config_args, &sweep, &input, labels.as_deref())
            }
        }
    }
}

fn init_logging(config: &Config, format: Option<LogFormat>, quiet: bool) {
    // The demo prints alerts on stdout; keep its logs to warnings unless asked.
    let default_level = if quiet && std::env::var_os("RUST_LOG").is_none() {
        "warn"
    } else {
        config.log.level.as_str()
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    match format.unwrap_or(config.log.format) {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("while starting the async runtime")
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

async fn run_service(config: Config) -> Result<()> {
    let metrics = Arc::new(Metrics::new(
        config.metrics.manager_series,
        config.metrics.max_manager_series,
    ));
    let health = Health::default();
    let addr: SocketAddr = config
        .metrics
        .addr
        .parse()
        .context("while reading metrics.addr")?;
    let stop = tokio_util::sync::CancellationToken::new();
    let (bound, http) = metrics::serve(
        addr,
        metrics.clone(),
        health.clone(),
        stop.clone().cancelled_owned(),
    )
    .await
    .with_context(|| format!("while binding the metrics server to {addr}"))?;
    tracing::info!(addr = %bound, "Serving /metrics, /healthz and /readyz.");
    let summary = service::run(&config, metrics, health, shutdown_signal())
        .await
        .context("while running the service")?;
    stop.cancel();
    let _ = http.await;
    tracing::info!(
        messages = summary.messages,
        alerts = summary.alerts,
        settled = summary.settled,
        "Exiting."
    );
    Ok(())
}

/// A count of at least one, for the simulator's sizes.
fn at_least_one<T>(text: &str) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + From<u8>,
    T::Err: std::fmt::Display,
{
    match text.parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        Ok(_) => Err("must be at least 1".to_owned()),
        Err(e) => Err(format!("not a whole number: {e}")),
    }
}

/// A share from 0 to 1, for the simulator's rates.
fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        Ok(_) => Err("must be a share from 0 to 1".to_owned()),
        Err(e) => Err(format!("not a number: {e}")),
    }
}

fn simulate_to_file(sim: SimConfig, out: &Path, labels: Option<PathBuf>) -> Result<()> {
    let labels_path = labels.unwrap_or_else(|| out.with_extension("labels.json"));
    let writer = create(out)?;
    let mut simulation = Simulation::new(sim);
    let mut count = 0u64;
    let events = simulation
        .by_ref()
        .flatten()
        .inspect(|_| count += 1)
        .map(|event| event.to_json());
    write_json_lines(writer, out, events)?;
    let labels_json =
        serde_json::to_string_pretty(simulation.labels()).context("while encoding the labels")?;
    std::fs::write(&labels_path, labels_json)
        .with_context(|| format!("while writing {}", labels_path.display()))?;
    eprintln!(
        "Wrote {count} events to {} and the ground truth to {}.",
        out.display(),
        labels_path.display()
    );
    Ok(())
}

async fn simulate_to_kafka(config: &Config, sim: SimConfig) -> Result<()> {
    // Fails at once on a refused login or an absent cluster; the producer
    // alone would retry until its messages time out.
    feidan::kafka::fetch_metadata(&config.kafka, Duration::from_secs(30))?;
    let producer: FutureProducer = feidan::kafka::client_config(&config.kafka)
        .set("linger.ms", "20")
        .create()
        .context("while creating the producer")?;
    let topic = &config.kafka.input_topic;
    let mut count = 0u64;
    for events in Simulation::new(sim) {
        for event in events {
            let payload = event.to_json().to_string();
            producer
                .send(
                    FutureRecord::to(topic)
                        .key(event.account_id.as_bytes())
                        .payload(payload.as_bytes()),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(error, _)| error)
                .with_context(|| format!("while producing to {topic}"))?;
            count += 1;
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .context("while flushing the producer")?;
    eprintln!("Produced {count} events to {topic}.");
    Ok(())
}

/// The backtest's stages have threads of their own (reading, the account
/// stage, the manager stage), which keep two cores busy; judging accounts
/// and managers on every core besides made the threads take turns on them
/// (the 4000-manager world: 14.9–15.7 s with two judging threads on two
/// cores, 13.5–13.7 s with one). So judging gets the cores the stages leave,
/// at least one, unless `RAYON_NUM_THREADS` says otherwise.
fn size_judging_for_backtest() {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Fails only when the pool was already built; it then stays as it is.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(cores.saturating_sub(2).max(1))
        .build_global();
}

/// The files of one backtest: the events, and the optional labels, alerts
/// and trace.
struct BacktestFiles<'a> {
    input: &'a Path,
    labels: Option<&'a Path>,
    output: Option<&'a Path>,
    trace_output: Option<&'a Path>,
}

fn create(path: &Path) -> Result<BufWriter<File>> {
    let file = File::create(path).with_context(|| format!("while creating {}", path.display()))?;
    Ok(BufWriter::new(file))
}

/// Writes `value` as one JSON line.
fn write_json_line(writer: &mut impl Write, value: &serde_json::Value) -> io::Result<()> {
    serde_json::to_writer(&mut *writer, value)?;
    writer.write_all(b"\n")
}

/// Writes `values` one JSON object a line to `writer`, the file at `path`.
fn write_json_lines(
    mut writer: BufWriter<File>,
    path: &Path,
    values: impl IntoIterator<Item = serde_json::Value>,
) -> Result<()> {
    let writing = || format!("while writing {}", path.display());
    for value in values {
        write_json_line(&mut writer, &value).with_context(writing)?;
    }
    writer.flush().with_context(writing)
}

fn run_backtest(config: &Config, files: &BacktestFiles, traced: backtest::Traced) -> Result<()> {
    let input = files.input;
    let truth = files.labels.map(read_labels).transpose()?;
    let file = File::open(input).with_context(|| format!("while opening {}", input.display()))?;
    let progress = progress_bar(&file);
    let mut writer = files.output.map(create).transpose()?;
    // Traces go to their file as they come, or are kept to be printed
    // after the report.
    let mut trace_writer = files.trace_output.map(create).transpose()?;
    let mut traces = Vec::new();
    let started = Instant::now();
    let report = backtest::replay_tracing(
        config,
        BufReader::with_capacity(1 << 20, progress.wrap_read(file)),
        traced,
        |alert| match writer.as_mut() {
            Some(writer) => write_json_line(writer, &alert.to_json()),
            None => Ok(()),
        },
        |trace| match trace_writer.as_mut() {
            Some(writer) => write_json_line(writer, &trace.to_json()),
            None => {
                traces.push(trace);
                Ok(())
            }
        },
    )
    .with_context(|| format!("while replaying {}", input.display()))?;
    progress.finish_and_clear();
    if let Some(mut writer) = writer {
        writer.flush().context("while writing the alerts")?;
    }
    if let (Some(mut writer), Some(path)) = (trace_writer, files.trace_output) {
        writer
            .flush()
            .with_context(|| format!("while writing {}", path.display()))?;
    }
    let elapsed = started.elapsed();

    let mut stdout = io::stdout().lock();
    backtest::write_replay(&mut stdout, &report, elapsed)?;
    if let Some(truth) = truth {
        backtest::write_scores(&mut stdout, &report, &truth)?;
    }
    if files.trace_output.is_none() {
        backtest::write_traces(&mut stdout, &traces, traced)?;
    }
    Ok(())
}

/// A progress bar over the bytes of `file`, shown only on a terminal and
/// for files big enough to take more than a moment.
fn progress_bar(file: &File) -> indicatif::ProgressBar {
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if size < 50 << 20 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(size);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Replays the input once per combination of the sweep values and prints
/// one table row each.
fn run_sweep(
    base: &ConfigArgs,
    sweep: &[String],
    input: &Path,
    labels: Option<&Path>,
) -> Result<()> {
    let grid = backtest::SweepGrid::parse(sweep)?;
    let truth = labels.map(read_labels).transpose()?;
    let events =
        std::fs::read(input).with_context(|| format!("while reading {}", input.display()))?;
    let progress = indicatif::ProgressBar::new(grid.len() as u64);

    let mut stdout = io::stdout().lock();
    grid.write_header(&mut stdout)?;
    for index in 0..grid.len() {
        let chosen = grid.combination(index);
        let mut overrides = base.overrides.clone();
        overrides.extend(chosen.iter().cloned());
        let config = Config::load(base.config.as_deref(), &overrides, std::env::vars())
            .with_context(|| format!("while applying {}", chosen.join(" ")))?;
        let report = backtest::replay(&config, events.as_slice(), |_| Ok(()))?;
        progress.inc(1);
        backtest::write_row(&mut stdout, &chosen, &report.alerts, truth.as_ref())?;
    }
    progress.finish_and_clear();
    Ok(())
}

/// Reads a ground-truth labels file from `simulate`.
fn read_labels(path: &Path) -> Result<GroundTruth> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("while reading {}", path.display()))?;
    GroundTruth::parse(&text).with_context(|| format!("while reading {}", path.display()))
}

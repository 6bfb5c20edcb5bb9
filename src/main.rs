//! The `metta-learner-backend` binary: the server (default), or the engine child that the
//! server spawns for itself (`engine`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use metta_learner_backend::{run_engine, Application, Config, EngineArgs, LogFormat};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Backend of the MeTTa learning playground: a persistent job queue with durable history.
/// Every setting is an environment variable (shown in brackets) or the matching flag.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server (the default).
    Serve,
    /// Internal: the MeTTa engine child the server spawns. Not for direct use.
    #[command(hide = true)]
    Engine(EngineArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Engine(args)) => run_engine(args),
        Some(Command::Serve) | None => serve(cli.config),
    }
}

fn serve(config: Config) -> ExitCode {
    init_logging(config.log_format);
    // Out of its range, SERVER_THREADS is refused by `Application::build` like any setting.
    let threads = usize::try_from(config.server_threads)
        .unwrap_or(1)
        .clamp(1, 256);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        let result = match Application::build(config).await {
            Ok(app) => app.run(shutdown).await,
            Err(err) => Err(err),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!("{}", describe_error(&err));
                ExitCode::FAILURE
            }
        }
    })
}

/// The error and its causes, each said once: a cause whose text the message before it already
/// carries (thiserror messages that print their source) is not repeated.
fn describe_error(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    text
}

/// Logs to stderr in the configured format, filtered by `RUST_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    // A log line that cannot be written (the log pipe is gone) is dropped, not reported on
    // stderr, which would panic: a server whose supervisor died must still run and stop.
    let logs = tracing_subscriber::fmt()
        .log_internal_errors(false)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

/// Fires the shutdown token on SIGTERM or SIGINT.
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(err) => {
            tracing::error!("cannot listen for SIGTERM: {err}");
            return;
        }
    };
    let signal = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    };
    // Cancel before logging: with its log pipe gone (a supervisor that died), a log line
    // panics this task, and the server must still stop.
    shutdown.cancel();
    tracing::info!("{signal} received; shutting down");
}

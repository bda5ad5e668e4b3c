//! The `ferrocd` binary: an etcd-compatible server, started like `etcd`;
//! and `ferrocd snapshot ...`, etcdctl's snapshot tooling.

use std::process::ExitCode;

use ferrocd::config::{Config, Flags};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    ferrocd::tls::install_provider();
    // The server takes only flags, so a first word names a tool.
    let args: Vec<_> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "snapshot") {
        return ferrocd::etcd_snapshot::cli::run(args[1..].to_vec());
    }
    let config = match Config::from_flags(Flags::from_args()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferrocd: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = ferrocd::tls::preflight(&config.tls) {
        eprintln!("ferrocd: {e}");
        return ExitCode::from(2);
    }
    if let Some(Err(e)) = config.auth.jwt.as_ref().map(ferrocd::auth::jwt::Jwt::load) {
        eprintln!("ferrocd: {e}");
        return ExitCode::from(2);
    }
    let level = match config.log_level.as_str() {
        "panic" | "fatal" => "error",
        other => other,
    };
    let filter = EnvFilter::try_from_env("FERROCD_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},openraft=warn,sled=warn,h2=warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferrocd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ferrocd::server::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrocd: {e:#}");
            if e.is::<ferrocd::server::RaftFailed>() {
                // Dropping the runtime would drop the databases, whose
                // last flush could wait forever on a failed disk.
                std::process::exit(1);
            }
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

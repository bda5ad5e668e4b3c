//! The `ferrocd` binary: an etcd-compatible server, started like `etcd`;
//! and `ferrocd snapshot ...`, etcdctl's snapshot tooling.

use std::process::ExitCode;

use ferrocd::config::{Config, Flags};
use tracing_subscriber::EnvFilter;

/// See `ferrocd::allocator`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    ferrocd::allocator::tune();
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
    // The handlers go in before anything else: as a container's first
    // process, ferrocd gets no SIGTERM it has no handler for, and a stop
    // asked while it starts would wait for the kill after the grace period.
    let result = runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        ferrocd::server::run(config, shutdown).await
    });
    match result {
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

/// Installs the SIGTERM and SIGINT handlers; the future completes on
/// either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

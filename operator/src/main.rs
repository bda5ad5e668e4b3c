//! `ferrocd-operator`: watches `EtcdCluster`s and reconciles them, serving
//! `/metrics`, `/healthz` and `/readyz`, with Lease-based leader election.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use clap::{ArgAction, Parser, Subcommand};
use futures::StreamExt;
use kube::api::ListParams;
use kube::{Api, Client};
use tracing_subscriber::EnvFilter;

use ferrocd_operator::controller::{
    backup, error_policy, reconcile, schedule, Context, GrpcConnector,
};
use ferrocd_operator::crd::EtcdCluster;
use ferrocd_operator::leader::LeaderElector;
use ferrocd_operator::metrics::Metrics;
use ferrocd_operator::watches;

/// Command line of `ferrocd-operator`.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Namespace to watch; all namespaces when absent.
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address serving /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Reconcile only while holding the leader Lease (`--leader-election=false` to disable).
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "ferrocd-operator")]
    leader_election_id: String,
    /// Run a tool instead of the operator.
    #[command(subcommand)]
    command: Option<Tool>,
}

/// Tools in the same binary, for the member pods of the same image.
#[derive(Debug, Subcommand)]
enum Tool {
    /// GET an HTTPS URL with a client certificate, or an HTTP one; exit 0
    /// on a 200 answer. The readiness probe of members with mutual TLS, and
    /// the chart's `helm test`.
    Probe {
        /// The URL, e.g. https://127.0.0.1:2379/readyz.
        #[arg(long)]
        url: String,
        /// Directory of a mounted kubernetes.io/tls Secret: ca.crt, tls.crt,
        /// tls.key (needed for https:// URLs).
        #[arg(long)]
        tls_dir: Option<std::path::PathBuf>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 2)]
        timeout_seconds: u64,
    },
    /// Stream a snapshot of a cluster to a file or S3 object; the backup Job's command.
    Backup(Box<ferrocd_operator::backup::cli::BackupArgs>),
    /// Restore a member's empty data directory from a snapshot; the init
    /// step of members of a cluster with spec.restore.
    Restore(Box<ferrocd_operator::backup::restore::RestoreArgs>),
    /// Check that a stored backup is the one recorded and restores; the
    /// verify Job of spec.backup.verify.
    VerifyBackup(Box<ferrocd_operator::backup::verify::VerifyArgs>),
}

#[derive(Clone)]
struct Http {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = Args::parse();
    if let Some(Tool::Backup(backup)) = &args.command {
        std::process::exit(ferrocd_operator::backup::cli::run(backup).await);
    }
    if let Some(Tool::VerifyBackup(verify)) = &args.command {
        std::process::exit(ferrocd_operator::backup::verify::run(verify).await);
    }
    if let Some(Tool::Restore(restore)) = &args.command {
        std::process::exit(ferrocd_operator::backup::restore::run(restore).await);
    }
    if let Some(Tool::Probe {
        url,
        tls_dir,
        timeout_seconds,
    }) = &args.command
    {
        let timeout = std::time::Duration::from_secs(*timeout_seconds);
        match ferrocd_operator::probe::probe(url, tls_dir.as_deref(), timeout).await {
            Ok(body) => {
                print!("{body}");
                return Ok(());
            }
            Err(error) => {
                eprintln!("probe {url}: {error}");
                std::process::exit(1);
            }
        }
    }
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    // Both kube and tonic use rustls; pick its provider once for the process.
    // An error only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let client = Client::try_default().await?;
    let clusters: Api<EtcdCluster> = watches::scoped(&client, args.namespace.as_deref());
    // Fail fast with a clear message when the CRD is not installed.
    clusters
        .list(&ListParams::default().limit(1))
        .await
        .map_err(|e| format!("listing EtcdClusters failed (is the CRD installed?): {e}"))?;

    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let http = Http {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let listener = tokio::net::TcpListener::bind(args.metrics_addr).await?;
    tracing::info!(addr = %args.metrics_addr, "serving metrics and probes");
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router(http)).await {
            tracing::error!(%error, "metrics server stopped");
        }
    });

    let ctx = Arc::new(Context::new(client.clone(), metrics, GrpcConnector));
    let controller = run_controller(client.clone(), args.namespace.clone(), ctx);
    // Standby replicas are ready too: readiness says the process works, not that it leads.
    ready.store(true, Ordering::Relaxed);
    if args.leader_election {
        let identity = std::env::var("POD_NAME")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("ferrocd-operator-{}", std::process::id()));
        let elector = LeaderElector::new(
            client,
            &args.leader_election_namespace,
            &args.leader_election_id,
            &identity,
        );
        elector.run(controller).await?;
    } else {
        controller.await;
    }
    Ok(())
}

async fn run_controller(client: Client, namespace: Option<String>, ctx: Arc<Context>) {
    let backups = backup::controller(&client, namespace.as_deref())
        .shutdown_on_signal()
        .run(backup::reconcile, backup::error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(backup = %object.name, "reconciled"),
                Err(error) => tracing::warn!(%error, "backup reconcile failed"),
            }
        });
    let schedules = schedule::controller(&client, namespace.as_deref())
        .shutdown_on_signal()
        .run(schedule::reconcile, schedule::error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::warn!(%error, "backup schedule failed");
            }
        });
    let clusters = watches::controller(&client, namespace.as_deref())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(cluster = %object.name, "reconciled"),
                Err(error) => tracing::warn!(%error, "reconcile failed"),
            }
        });
    futures::join!(clusters, backups, schedules);
}

fn router(http: Http) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(http)
}

async fn metrics(State(http): State<Http>) -> String {
    http.metrics.render()
}

async fn readyz(State(http): State<Http>) -> (StatusCode, &'static str) {
    if http.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults_watch_all_namespaces_with_leader_election() {
        let args = Args::try_parse_from(["ferrocd-operator"]).unwrap();
        assert_eq!(args.namespace, None);
        assert!(args.leader_election);
        assert_eq!(args.metrics_addr, "0.0.0.0:8080".parse().unwrap());
    }

    #[test]
    fn probe_takes_url_and_certificate_directory() {
        let args = Args::try_parse_from([
            "ferrocd-operator",
            "probe",
            "--url=https://127.0.0.1:2379/readyz",
            "--tls-dir=/etc/ferrocd/tls/server",
        ])
        .unwrap();
        let Some(Tool::Probe { url, tls_dir, .. }) = args.command else {
            panic!("expected the probe tool, got {:?}", args.command);
        };
        assert_eq!(url, "https://127.0.0.1:2379/readyz");
        assert_eq!(
            tls_dir.as_deref(),
            Some(std::path::Path::new("/etc/ferrocd/tls/server"))
        );
    }

    #[test]
    fn backup_takes_endpoint_and_exactly_one_destination() {
        let args = Args::try_parse_from([
            "ferrocd-operator",
            "backup",
            "--endpoint=http://demo.prod.svc:2379",
            "--file=/backup/x.db",
        ])
        .unwrap();
        assert!(matches!(args.command, Some(Tool::Backup(_))));
        let both = Args::try_parse_from([
            "ferrocd-operator",
            "backup",
            "--endpoint=http://demo.prod.svc:2379",
            "--file=/backup/x.db",
            "--s3-endpoint=http://s3:9000",
            "--s3-bucket=b",
            "--s3-key=k",
        ]);
        assert!(both.is_err());
        let neither = Args::try_parse_from([
            "ferrocd-operator",
            "backup",
            "--endpoint=http://demo.prod.svc:2379",
        ]);
        assert!(neither.is_err());
    }

    #[test]
    fn leader_election_can_be_switched_off() {
        let args = Args::try_parse_from([
            "ferrocd-operator",
            "--leader-election=false",
            "--namespace=prod",
        ])
        .unwrap();
        assert!(!args.leader_election);
        assert_eq!(args.namespace.as_deref(), Some("prod"));
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_metrics_and_probes() {
        let ready = Arc::new(AtomicBool::new(false));
        let http = Http {
            metrics: Arc::new(Metrics::new()),
            ready: ready.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(http)).await });

        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        ready.store(true, Ordering::Relaxed);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        let metrics = get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"));
        assert!(metrics.contains("ferrocd_operator_reconciliations_total 0"));
    }
}

//! Wiring: storage, raft, gRPC listeners, and graceful shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ferrocd_proto::etcdserverpb::auth_server::AuthServer;
use ferrocd_proto::etcdserverpb::cluster_server::ClusterServer;
use ferrocd_proto::etcdserverpb::kv_server::KvServer;
use ferrocd_proto::etcdserverpb::lease_server::LeaseServer;
use ferrocd_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use ferrocd_proto::etcdserverpb::watch_server::WatchServer;
use openraft::{BasicNode, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tracing::{info, warn};

use crate::api::{self, Context};
use crate::config::Config;
use crate::lease::Lessor;
use crate::mvcc::Mvcc;
use crate::raft::{LogStore, Network, Raft, StateMachine};
use crate::watch::WatchHub;

/// gRPC framing allowance on top of `--max-request-bytes`, as etcd allows.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Log entries kept behind a snapshot for followers to catch up from (etcd's
/// `--snapshot-catchup-entries` default).
const SNAPSHOT_CATCHUP_ENTRIES: u64 = 5000;

/// How often the state machine's database is flushed in the background
/// (bounds how much log a restart replays).
const STATE_FLUSH_MS: u64 = 1000;

/// A running member's parts.
pub struct Node {
    pub raft: Raft,
    pub mvcc: Arc<Mvcc>,
    pub lessor: Arc<Lessor>,
    pub hub: Arc<WatchHub>,
    /// The state machine's database.
    pub db: sled::Db,
    /// The raft log's database.
    pub wal: sled::Db,
}

/// Opens the data directory and starts raft. Returns once this member can
/// serve (it has a leader).
pub async fn open(config: &Config) -> anyhow::Result<Node> {
    let dir = config.data_dir.join("member");
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating data dir {}", dir.display()))?;
    // The raft log has a database of its own: acknowledging a write fsyncs
    // only the log, not the state machine's pages. The state machine is
    // flushed in the background and before the log is purged behind a
    // snapshot; after a crash, the log replays what it had not yet flushed.
    let db = open_db(&dir.join("db"), 256 << 20, Some(STATE_FLUSH_MS))?;
    let wal = open_db(&dir.join("wal"), 16 << 20, None)?;
    let mvcc = Arc::new(Mvcc::open(db.open_tree("state")?).context("opening the key-value store")?);
    let log = LogStore::open(&wal)?;
    let hub = WatchHub::new(mvcc.clone(), config.max_request_bytes);
    tokio::spawn(hub.clone().run(config.watch_progress_notify_interval));
    let lessor = Arc::new(Lessor::new(Lessor::min_ttl_for(Duration::from_millis(
        config.election_timeout_ms,
    ))));
    lessor.restore_from(&mvcc).context("reading leases")?;
    let sm = StateMachine::new(mvcc.clone(), lessor.clone(), hub.clone(), dir.join("snap"))?;

    let raft_config = openraft::Config {
        cluster_name: "ferrocd".into(),
        heartbeat_interval: config.heartbeat_interval_ms,
        election_timeout_min: config.election_timeout_ms,
        election_timeout_max: config.election_timeout_ms * 2,
        // Every --snapshot-count applied entries a snapshot is written and
        // the log before it purged, keeping some entries for slow followers.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_count),
        max_in_snapshot_log_to_keep: SNAPSHOT_CATCHUP_ENTRIES,
        ..Default::default()
    }
    .validate()?;
    let raft = Raft::new(config.member_id, Arc::new(raft_config), Network, log, sm).await?;

    let fresh = !raft.is_initialized().await?;
    if fresh {
        let members: BTreeMap<u64, BasicNode> = config
            .initial_cluster
            .iter()
            .map(|m| (m.id, BasicNode::new(m.peer_urls[0].clone())))
            .collect();
        info!(member = %format!("{:x}", config.member_id), "bootstrapping a new cluster");
        raft.initialize(members).await?;
    }
    if !fresh && config.initial_cluster.len() == 1 {
        // A lone voter need not wait out an election timeout to lead again.
        raft.trigger().elect().await?;
    }
    wait_for_leader(&raft).await?;
    Ok(Node {
        raft,
        mvcc,
        lessor,
        hub,
        db,
        wal,
    })
}

/// Waits for a leader, and for this member to have applied its whole log
/// (after a crash the store may be behind the log), so that even
/// serializable reads see every write acknowledged before the restart.
async fn wait_for_leader(raft: &Raft) -> anyhow::Result<()> {
    let wait = raft.wait(Some(Duration::from_secs(30)));
    wait.metrics(|m| m.current_leader.is_some(), "waiting for a leader")
        .await
        .context("no leader elected")?;
    wait.metrics(
        |m| m.last_applied.map(|l| l.index) >= m.last_log_index,
        "replaying the log",
    )
    .await
    .context("log replay did not finish")?;
    Ok(())
}

fn open_db(path: &Path, cache_bytes: u64, flush_every_ms: Option<u64>) -> anyhow::Result<sled::Db> {
    sled::Config::new()
        .path(path)
        .cache_capacity(cache_bytes)
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(flush_every_ms)
        .open()
        .with_context(|| format!("opening database {}", path.display()))
}

/// Runs the server until `shutdown` completes, then stops gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    for note in &config.ignored {
        warn!("{note}");
    }
    let Node {
        raft,
        mvcc,
        lessor,
        hub,
        db,
        wal,
    } = open(&config).await?;
    let ctx = Context::new(raft.clone(), mvcc, config.clone(), db.clone());

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(api::expire_leases(
        ctx.clone(),
        lessor.clone(),
        stop_rx.clone(),
    ));
    let mut servers = Vec::new();
    for addr in &config.listen_client {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening for client traffic on {addr}"))?;
        info!(%addr, "serving client requests");
        let routes = client_routes(
            &ctx,
            &hub,
            &lessor,
            config.max_request_bytes + GRPC_OVERHEAD_BYTES,
        );
        let mut stop = stop_rx.clone();
        servers.push(tokio::spawn(async move {
            tonic::transport::Server::builder()
                .accept_http1(true)
                .add_routes(routes)
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener).map(|conn| {
                        // Without TCP_NODELAY, small responses written in two
                        // parts wait on the client's delayed ACK (~40 ms).
                        conn.inspect(|c| {
                            let _ = c.set_nodelay(true);
                        })
                    }),
                    async move {
                        let _ = stop.wait_for(|s| *s).await;
                    },
                )
                .await
        }));
    }
    info!(
        name = %config.name,
        member = %format!("{:x}", config.member_id),
        cluster = %format!("{:x}", config.cluster_id),
        "ready to serve client requests"
    );

    shutdown.await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    // Open client connections would hold a graceful stop forever; give
    // in-flight requests a moment, then close what is left.
    for mut s in servers {
        match tokio::time::timeout(Duration::from_secs(2), &mut s).await {
            Ok(Ok(Err(e))) => warn!("client listener: {e}"),
            Ok(_) => {}
            Err(_) => s.abort(),
        }
    }
    if let Err(e) = raft.shutdown().await {
        warn!("raft shutdown: {e}");
    }
    db.flush_async().await?;
    wal.flush_async().await?;
    Ok(())
}

fn client_routes(
    ctx: &Context,
    hub: &Arc<WatchHub>,
    lessor: &Arc<Lessor>,
    max_decode: usize,
) -> tonic::service::Routes {
    let mut routes = tonic::service::RoutesBuilder::default();
    routes
        .add_service(
            KvServer::new(api::KvService::new(ctx.clone())).max_decoding_message_size(max_decode),
        )
        .add_service(
            WatchServer::new(api::WatchService::new(ctx.clone(), hub.clone()))
                .max_decoding_message_size(max_decode),
        )
        .add_service(
            LeaseServer::new(api::LeaseService::new(ctx.clone(), lessor.clone()))
                .max_decoding_message_size(max_decode),
        )
        .add_service(
            ClusterServer::new(api::ClusterService::new(ctx.clone()))
                .max_decoding_message_size(max_decode),
        )
        .add_service(
            MaintenanceServer::new(api::MaintenanceService::new(ctx.clone()))
                .max_decoding_message_size(max_decode),
        )
        .add_service(AuthServer::new(api::AuthService).max_decoding_message_size(max_decode));
    let mut routes = routes.routes();
    let grpc = std::mem::take(routes.axum_router_mut());
    *routes.axum_router_mut() = crate::http::routes(grpc, ctx.clone());
    routes
}

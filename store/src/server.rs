//! Wiring: storage, raft, gRPC listeners, and graceful shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ferrocd_proto::etcdserverpb::auth_server::AuthServer;
use ferrocd_proto::etcdserverpb::cluster_server::ClusterServer;
use ferrocd_proto::etcdserverpb::kv_server::KvServer;
use ferrocd_proto::etcdserverpb::lease_server::LeaseServer;
use ferrocd_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use ferrocd_proto::etcdserverpb::Member as EtcdMember;
use ferrocd_proto::ferrocdpb::member_change::Change;
use ferrocd_proto::ferrocdpb::peer_server::PeerServer;
use ferrocd_proto::ferrocdpb::ClusterInfoRequest;
use openraft::SnapshotPolicy;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};
use tracing::{error, info, warn};

use crate::alarm::Alarms;
use crate::api::{self, Context};
use crate::auth::AuthStore;
use crate::authority;
use crate::coalesce::Coalesced;
use crate::config::{Config, Listen};
use crate::lease::Lessor;
use crate::mvcc::{CheckpointError, Mvcc};
use crate::raft::backend::OpenDb;
use crate::raft::network::MAX_PEER_MESSAGE;
use crate::raft::{elections, force};
use crate::raft::{Backend, LogStore, Member, Network, PeerClients, Raft, StateMachine, APPLIED};
use crate::tls::{self, client::ClientTls, server::ServerTls};
use crate::watch::WatchHub;

/// gRPC framing allowance on top of `--max-request-bytes`, as etcd allows.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Log entries kept behind a snapshot for followers to catch up from (etcd's
/// `--snapshot-catchup-entries` default).
const SNAPSHOT_CATCHUP_ENTRIES: u64 = 5000;

/// How often the state machine's database is flushed in the background
/// (bounds how much log a restart replays).
const STATE_FLUSH_MS: u64 = 1000;

/// sled's page cache for the state database. Values are read from disk by
/// revision (the key index is in memory), so the cache mostly holds the
/// tree's inner pages and recent writes; the kernel's page cache, which
/// does not count against the process, keeps the rest close. 256 MiB made
/// the cache a third of the process at 1M keys (the restart's scan of
/// every record fills it); 32 MiB took 50 MiB off the RSS after writing
/// 1M keys against 64 MiB, with the same put rate (bench/RESULTS.md).
const STATE_CACHE_BYTES: u64 = 32 << 20;

/// How long a follower may take to answer a snapshot chunk (the last one
/// includes loading the snapshot).
const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 60_000;

/// Most log entries in one append to a follower; the log store also stops
/// an append at about 256 KiB of entries (entries are batches of client
/// writes, up to 4 MiB each), so this only bounds a follower catching up
/// on many small entries.
const MAX_PAYLOAD_ENTRIES: u64 = 4096;

/// Where a member keeps its identity, written at its first start so that
/// later starts ignore the `--initial-*` flags, as etcd does.
const IDENTITY: &str = "identity.json";

/// How long a joining member looks for the cluster it was added to.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// A running member's parts.
pub struct Node {
    /// The configuration with this member's identity resolved.
    pub config: Config,
    pub ctx: Context,
    pub raft: Raft,
    pub mvcc: Arc<Mvcc>,
    pub lessor: Arc<Lessor>,
    pub hub: Arc<WatchHub>,
    /// The state machine's storage (its database: `backend.db()`).
    pub backend: Arc<Backend>,
    /// The raft log's metadata database (vote, commit index, purge point).
    pub wal: sled::Db,
    /// The raft log, closed at a clean stop.
    pub log: LogStore,
    /// The peer listeners.
    pub peer_servers: Vec<tokio::task::JoinHandle<()>>,
    /// Stops the member's background tasks (dropping it does too).
    pub stop: watch::Sender<bool>,
}

/// This member's and its cluster's ids, fixed at its first start.
#[derive(Debug, Serialize, Deserialize)]
struct Identity {
    member_id: String,
    cluster_id: String,
}

/// Settles this member's ids: from its data directory when it has started
/// before; from the flags for a new cluster; from the cluster's members
/// when joining an existing one (the member must have been added there).
async fn resolve_identity(
    config: &mut Config,
    dir: &Path,
    had_data: bool,
    tls: Option<Arc<ClientTls>>,
) -> anyhow::Result<()> {
    let path = dir.join(IDENTITY);
    match std::fs::read(&path) {
        Ok(raw) => {
            let (member, cluster) =
                parse_identity(&raw).with_context(|| format!("reading {}", path.display()))?;
            config.member_id = member;
            config.cluster_id = cluster;
            return Ok(());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    if config.join_existing && !had_data {
        let (member, cluster) = join_info(config, tls).await?;
        config.member_id = member;
        config.cluster_id = cluster;
    }
    write_identity(dir, config.member_id, config.cluster_id)
        .with_context(|| format!("writing {}", path.display()))
}

/// The member and cluster ids an identity file records.
fn parse_identity(raw: &[u8]) -> anyhow::Result<(u64, u64)> {
    let id: Identity = serde_json::from_slice(raw)?;
    let hex = |s: &str, what: &str| {
        u64::from_str_radix(s, 16).with_context(|| format!("{what} {s:?} is not a hex id"))
    };
    Ok((
        hex(&id.member_id, "member_id")?,
        hex(&id.cluster_id, "cluster_id")?,
    ))
}

/// Records a member's and its cluster's ids in its member directory
/// `dir`, durably: later starts take them from there, not from flags.
pub fn write_identity(dir: &Path, member_id: u64, cluster_id: u64) -> std::io::Result<()> {
    let id = Identity {
        member_id: format!("{member_id:x}"),
        cluster_id: format!("{cluster_id:x}"),
    };
    let tmp = dir.join("identity.json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&id).map_err(std::io::Error::other)?,
    )?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(IDENTITY))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Asks the members named in `--initial-cluster` for the cluster's id and
/// this member's id (it was given when the member was added).
async fn join_info(config: &Config, tls: Option<Arc<ClientTls>>) -> anyhow::Result<(u64, u64)> {
    let peers = PeerClients::new(0, tls);
    let mut mine = config.peer_urls.clone();
    mine.sort();
    let others: Vec<&String> = config
        .initial_cluster
        .iter()
        .filter(|m| m.name != config.name)
        .flat_map(|m| m.peer_urls.iter())
        .collect();
    anyhow::ensure!(
        !others.is_empty(),
        "--initial-cluster-state=existing needs the cluster's other members in --initial-cluster"
    );
    let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
    let mut last_error = String::new();
    while tokio::time::Instant::now() < deadline {
        for url in &others {
            let Ok(mut client) = peers.client(url) else {
                continue;
            };
            let mut req = tonic::Request::new(ClusterInfoRequest {});
            req.set_timeout(Duration::from_secs(2));
            match client.cluster_info(req).await {
                Ok(info) => {
                    let info = info.into_inner();
                    let me = info.members.iter().find(|m| {
                        let mut urls = m.peer_ur_ls.clone();
                        urls.sort();
                        urls == mine
                    });
                    return match me {
                        // A member that has started (it published its
                        // client URLs) holds data this empty directory
                        // does not: taking its id would lose it. A member
                        // of the initial cluster that never started has a
                        // name (from --initial-cluster) and no client URLs.
                        Some(m) if !m.client_ur_ls.is_empty() => anyhow::bail!(
                            "member {:x} ({}) with peer URLs {} has already started in cluster {:x}; \
                             a member with an empty data directory cannot take its place: \
                             remove it (etcdctl member remove {:x}) and add this one again",
                            m.id,
                            m.name,
                            mine.join(","),
                            info.cluster_id,
                            m.id
                        ),
                        Some(m) => Ok((m.id, info.cluster_id)),
                        None => anyhow::bail!(
                            "cluster {:x} has no member with peer URLs {}: add this member first (etcdctl member add {} --peer-urls={})",
                            info.cluster_id,
                            mine.join(","),
                            config.name,
                            mine.join(",")
                        ),
                    };
                }
                Err(e) => last_error = format!("{url}: {}", e.message()),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("could not reach any member of the existing cluster: {last_error}")
}

/// Opens the data directory and starts raft. Returns once this member can
/// serve (it has a leader).
pub async fn open(config: &Config) -> anyhow::Result<Node> {
    let mut config = config.clone();
    let dir = config.data_dir.join("member");
    let had_data = dir.join("wal").exists();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating data dir {}", dir.display()))?;
    resolve_auto_tls(&mut config)?;
    let peer_tls = match &config.tls.peer {
        Some(side) => Some(ClientTls::new(side.clone())?),
        None => None,
    };
    resolve_identity(&mut config, &dir, had_data, peer_tls.clone()).await?;
    // The raft log has a database of its own: acknowledging a write fsyncs
    // only the log, not the state machine's pages. The state machine is
    // flushed in the background and before the log is purged behind a
    // snapshot; after a crash, the log replays what it had not yet flushed.
    // A defragmentation replaces it by a new one (see `raft::backend::defrag`).
    let open_state_db: OpenDb = Box::new(|path: &Path| state_db_config(path).open());
    // The log's entries live in segment files under `wal`; its vote, commit
    // index and purge point in a small database beside them.
    let started = std::time::Instant::now();
    let wal = open_db(&dir.join("raft"), 16 << 20, None)?;
    // Which state tree is live, and the current snapshot; what an install
    // cut short by a crash left is deleted here.
    let backend =
        Arc::new(Backend::open_in(&dir, open_state_db).context("opening the state database")?);
    Backend::spawn_flusher(&backend, Duration::from_millis(STATE_FLUSH_MS));
    let dbs_opened = started.elapsed();
    let (mvcc, unused) =
        Mvcc::open_with_checkpoint(backend.state_tree()?, &checkpoint_path(&dir), APPLIED)
            .context("opening the key-value store")?;
    let mvcc = Arc::new(mvcc);
    let index_loaded = started.elapsed();
    let how = match unused {
        None => "loaded from its checkpoint".to_string(),
        Some(CheckpointError::Missing) => "rebuilt from disk (no checkpoint)".to_string(),
        Some(why) => {
            warn!("key index checkpoint not used: {why}");
            format!("rebuilt from disk ({why})")
        }
    };
    let log = LogStore::open(&wal, &dir.join("wal"))?;
    info!(
        databases_ms = dbs_opened.as_millis() as u64,
        key_index_ms = (index_loaded - dbs_opened).as_millis() as u64,
        log_ms = (started.elapsed() - index_loaded).as_millis() as u64,
        keys = mvcc.key_count(),
        "opened the stores; key index {how}"
    );
    log.step_down()?;
    let hub = WatchHub::new(mvcc.clone(), config.max_request_bytes);
    hub.spawn_task(config.watch_progress_notify_interval);
    let lessor = Arc::new(Lessor::new(Lessor::min_ttl_for(Duration::from_millis(
        config.election_timeout_ms,
    ))));
    lessor.restore_from(&mvcc).context("reading leases")?;
    let mut auth = AuthStore::new(config.auth.token_ttl);
    if let Some(options) = &config.auth.jwt {
        auth = auth.with_jwt(crate::auth::jwt::Jwt::load(options).map_err(anyhow::Error::msg)?);
    }
    let auth = Arc::new(auth);
    auth.restore_from(&mvcc)
        .context("reading users and roles")?;
    let alarms = Arc::new(Alarms::new());
    alarms.restore_from(&mvcc).context("reading alarms")?;
    let mut sm = StateMachine::new(
        mvcc.clone(),
        lessor.clone(),
        auth.clone(),
        alarms.clone(),
        hub.clone(),
        backend.clone(),
    );
    let mut log = log;
    force::at_start(&config, &dir, &mut log, &mut sm).await?;
    info!(
        ms = started.elapsed().as_millis() as u64,
        "restored leases, users, roles and alarms"
    );

    // See raft::elections for how etcd's timings map onto openraft's.
    let (election_min, election_max) =
        elections::timeouts(config.election_timeout_ms, config.heartbeat_interval_ms);
    let raft_config = openraft::Config {
        cluster_name: "ferrocd".into(),
        heartbeat_interval: config.heartbeat_interval_ms,
        election_timeout_min: election_min,
        election_timeout_max: election_max,
        // The last chunk of a snapshot is answered once the follower has
        // loaded the whole snapshot, seconds for millions of keys; a timeout
        // would make the leader send it all again.
        install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        // Every --snapshot-count applied entries a snapshot is written and
        // the log before it purged, keeping some entries for slow followers.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_count),
        max_in_snapshot_log_to_keep: SNAPSHOT_CATCHUP_ENTRIES.min(config.snapshot_count),
        ..Default::default()
    }
    .validate()?;
    let peers = PeerClients::new(config.cluster_id, peer_tls);
    let raft = Raft::new(
        config.member_id,
        Arc::new(raft_config),
        Network::new(peers.clone()),
        log.clone(),
        sm,
    )
    .await?;
    let closing = log.clone();
    let ctx = Context::new(
        raft.clone(),
        mvcc.clone(),
        auth,
        alarms,
        config.clone(),
        backend.clone(),
        peers,
        log,
    );

    let metrics = crate::metrics::get();
    metrics.set_detail(config.metrics);
    metrics.set_member_id(config.member_id);
    crate::metrics::spawn_leader_watch(raft.clone());

    let fresh = !raft.is_initialized().await?;
    // As etcd, only a member that has data compares it, before it serves
    // peers or clients; it does not campaign meanwhile, since the others
    // cannot reach it.
    if config.initial_corrupt_check && !fresh {
        raft.runtime_config().elect(false);
        let checked = api::corrupt_check::initial(&ctx).await;
        ctx.timer_elections(true);
        checked?;
    }
    if fresh && !config.join_existing {
        // Every member of a new cluster starts from the same membership,
        // built from --initial-cluster alone; client URLs are published
        // by each member once it runs.
        let members: BTreeMap<u64, Member> = config
            .initial_cluster
            .iter()
            .map(|m| {
                let node = Member {
                    name: m.name.clone(),
                    peer_urls: m.peer_urls.clone(),
                    client_urls: Vec::new(),
                };
                (m.id, node)
            })
            .collect();
        info!(member = %format!("{:x}", config.member_id), members = members.len(), "bootstrapping a new cluster");
        // Peers are served only after this: a vote arriving first would
        // make openraft refuse to initialize.
        match raft.initialize(members).await {
            Ok(()) => {}
            // A vote was recorded before a crash during an earlier start:
            // the members that did initialize bring the log.
            Err(openraft::error::RaftError::APIError(
                openraft::error::InitializeError::NotAllowed(e),
            )) => info!("not initializing ({e}); waiting for the other members"),
            Err(e) => return Err(e.into()),
        }
    } else if fresh {
        info!(member = %format!("{:x}", config.member_id), cluster = %format!("{:x}", config.cluster_id), "joining an existing cluster");
    }
    let alone = {
        let m = raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        membership.voter_ids().eq([config.member_id])
    };
    // Background tasks, stopped when the node is (or its handle dropped).
    let (stop, stop_rx) = watch::channel(false);
    // With --pre-vote, every campaign asks the voters first, and comes from
    // the failover task alone; without it, openraft's timer runs too.
    if config.pre_vote {
        raft.runtime_config().elect(false);
    }
    tokio::spawn(api::failover::watch_leader(ctx.clone(), stop_rx));
    if !fresh && !alone && !config.pre_vote {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let seed = config.member_id ^ u64::from(now).wrapping_mul(0x9e37_79b9);
        elections::hold_after_restart(
            &raft,
            elections::restart_hold(config.election_timeout_ms, seed),
        );
    }
    let peer_servers = serve_peers(&config, &ctx, &lessor).await?;
    if alone {
        // A lone voter need not wait out an election timeout to lead again.
        if !fresh {
            raft.trigger().elect().await?;
        }
        wait_for_leader(&raft, Duration::from_secs(30)).await?;
        info!(
            ms = started.elapsed().as_millis() as u64,
            "leading (a lone voter)"
        );
    } else if let Err(e) =
        wait_for_leader(&raft, Duration::from_millis(4 * config.election_timeout_ms)).await
    {
        // The other members may not be up yet: serve anyway (requests
        // needing a leader wait for one, then time out).
        info!("not caught up with a leader yet ({e:#}); serving meanwhile");
    }
    Ok(Node {
        config,
        ctx,
        raft,
        mvcc,
        lessor,
        hub,
        backend,
        wal,
        log: closing,
        peer_servers,
        stop,
    })
}

/// Makes the self-signed certificates of `--auto-tls`/`--peer-auto-tls`
/// (for the hosts this member listens on and advertises), or finds them
/// from an earlier start.
fn resolve_auto_tls(config: &mut Config) -> anyhow::Result<()> {
    fn hosts(urls: &[String], listen: &[Listen]) -> Vec<String> {
        let mut hosts: Vec<String> = urls
            .iter()
            .filter_map(|u| url::Url::parse(u).ok()?.host_str().map(str::to_string))
            .chain(listen.iter().map(|l| l.addr.ip().to_string()))
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }
    let years = config.self_signed_cert_validity;
    if let Some(side) = config.tls.client.take() {
        let hosts = hosts(&config.advertise_client_urls, &config.listen_client);
        config.tls.client = Some(tls::auto::resolve(side, &config.data_dir, &hosts, years)?);
    }
    if let Some(side) = config.tls.peer.take() {
        let hosts = hosts(&config.peer_urls, &config.listen_peer);
        config.tls.peer = Some(tls::auto::resolve(side, &config.data_dir, &hosts, years)?);
    }
    Ok(())
}

/// Listens for peer traffic on `--listen-peer-urls`.
async fn serve_peers(
    config: &Config,
    ctx: &Context,
    lessor: &Arc<Lessor>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    let tls = match &config.tls.peer {
        Some(side) => Some(ServerTls::new(side.clone(), &[b"h2"])?),
        None => None,
    };
    for listen in &config.listen_peer {
        let listener = TcpListener::bind(listen.addr)
            .await
            .with_context(|| format!("listening for peer traffic on {}", listen.addr))?;
        info!(addr = %listener.local_addr()?, tls = listen.tls, "serving peer requests");
        let service = PeerServer::new(api::PeerService::new(ctx.clone(), lessor.clone()))
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE);
        let routes = tonic::service::Routes::new(service);
        let never = std::future::pending::<()>();
        tasks.push(match (&tls, listen.tls) {
            (Some(tls), true) => {
                tokio::spawn(serve("peer", routes, tls.clone().incoming(listener), never))
            }
            _ => tokio::spawn(serve("peer", routes, plain(listener), never)),
        });
    }
    Ok(tasks)
}

/// Publishes this member's name and client URLs in the cluster's
/// membership (what `member list` shows), retrying until it is recorded,
/// then says so on `published`: as etcd, a member serves clients only
/// once its attributes are in the membership (its client listeners are
/// bound from the start, so early connections wait in the backlog).
async fn publish(ctx: Context, mut stop: watch::Receiver<bool>, published: watch::Sender<bool>) {
    let config = ctx.config().clone();
    let me = EtcdMember {
        id: config.member_id,
        name: config.name.clone(),
        peer_ur_ls: config.peer_urls.clone(),
        client_ur_ls: config.advertise_client_urls.clone(),
        is_learner: false,
    };
    loop {
        match api::change_members(&ctx, Change::Publish(me.clone())).await {
            Ok(_) => {
                info!(
                    name = %me.name,
                    member = %format!("{:x}", me.id),
                    "published member attributes; ready to serve client requests"
                );
                let _ = published.send(true);
                // Held until the stop: a dropped sender would read as a stop.
                let _ = stop.wait_for(|s| *s).await;
                return;
            }
            Err(e) => info!("publishing member attributes: {}", e.message()),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// How often the main task looks at raft's metrics. Polled, not watched:
/// raft publishes them after every write, and a watcher would wake the
/// main thread for each one (a few wake-ups per write, all on the path of
/// a lone client's next request).
const METRICS_POLL: Duration = Duration::from_millis(100);

/// Resolves once this member has been removed from the cluster: it sees
/// the committed membership without it, or the leader tells it.
async fn removed(raft: Raft, me: u64, ctx: Context) {
    tokio::select! {
        _ = removed_from_membership(raft, me) => {}
        _ = ctx.peers().removed() => {}
    }
}

async fn removed_from_membership(raft: Raft, me: u64) {
    let metrics = raft.metrics();
    let mut was_member = false;
    let mut tick = tokio::time::interval(METRICS_POLL);
    loop {
        tick.tick().await;
        {
            let m = metrics.borrow();
            let member = m.membership_config.membership().get_node(&me).is_some();
            // Only a committed membership counts.
            let committed =
                m.membership_config.log_id().map(|l| l.index) <= m.last_applied.map(|l| l.index);
            if member {
                was_member = true;
            } else if was_member && committed {
                return;
            }
        }
        if metrics.has_changed().is_err() {
            return std::future::pending().await;
        }
    }
}

/// Waits for a leader, and for this member to have applied its whole log
/// (after a crash the store may be behind the log), so that even
/// serializable reads see every write acknowledged before the restart.
async fn wait_for_leader(raft: &Raft, limit: Duration) -> anyhow::Result<()> {
    let wait = raft.wait(Some(limit));
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

/// The state database's settings (flushed by the backend's own flusher).
fn state_db_config(path: &Path) -> sled::Config {
    sled::Config::new()
        .path(path)
        .cache_capacity(STATE_CACHE_BYTES)
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(None)
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
    // Starting can wait long (on peers that are not up, say): a stop asked
    // meanwhile ends it. What was acknowledged before is on disk already.
    tokio::pin!(shutdown);
    let opened = tokio::select! {
        opened = open(&config) => opened?,
        () = &mut shutdown => {
            info!("stopped while starting");
            return Ok(());
        }
    };
    let Node {
        config,
        ctx,
        raft,
        lessor,
        hub,
        backend,
        wal,
        log,
        peer_servers,
        mvcc,
        stop: stop_tx,
    } = opened;
    let stop_rx = stop_tx.subscribe();
    tokio::spawn(api::expire_leases(
        ctx.clone(),
        lessor.clone(),
        stop_rx.clone(),
    ));
    let (published_tx, published_rx) = watch::channel(false);
    tokio::spawn(publish(ctx.clone(), stop_rx.clone(), published_tx));
    if let Some(mode) = config.auto_compaction {
        tokio::spawn(api::compactor::run(ctx.clone(), mode, stop_rx.clone()));
    }
    tokio::spawn(api::sweep_tokens(ctx.clone(), stop_rx.clone()));
    tokio::spawn(api::liveness::ping_members(ctx.clone(), stop_rx.clone()));
    tokio::spawn(api::watch_space(ctx.clone(), stop_rx.clone()));
    if let Some(every) = config.corrupt_check_interval {
        tokio::spawn(api::corrupt_check::monitor(
            ctx.clone(),
            every,
            stop_rx.clone(),
        ));
    }
    let client_tls = match &config.tls.client {
        Some(side) => Some(ServerTls::new(side.clone(), &[b"h2", b"http/1.1"])?),
        None => None,
    };
    let mut servers = Vec::new();
    for listen in &config.listen_client {
        let listener = TcpListener::bind(listen.addr)
            .await
            .with_context(|| format!("listening for client traffic on {}", listen.addr))?;
        info!(addr = %listen.addr, tls = listen.tls, "listening for client requests");
        let routes = client_routes(
            &ctx,
            &hub,
            &lessor,
            config.max_request_bytes + GRPC_OVERHEAD_BYTES,
        );
        let mut stop = stop_rx.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let mut published = published_rx.clone();
        let tls = client_tls.clone().filter(|_| listen.tls);
        servers.push(tokio::spawn(async move {
            // Ends (never serving) when the member stops unpublished.
            if published.wait_for(|p| *p).await.is_err() {
                return;
            }
            // etcdctl may name the endpoint as a URL in `:authority`,
            // which the HTTP/2 server would refuse: client connections
            // are repaired. Their writes are gathered (see `coalesce`).
            match tls {
                Some(tls) => {
                    let incoming = tls
                        .incoming(listener)
                        .map(|c| c.map(|c| Coalesced::new(authority::Connection::new(c))));
                    serve("client", routes, incoming, stopped).await
                }
                None => {
                    let incoming = plain(listener)
                        .map(|c| c.map(|c| Coalesced::new(authority::Connection::new(c))));
                    serve("client", routes, incoming, stopped).await
                }
            }
        }));
    }
    for listen in &config.listen_metrics {
        let listener = TcpListener::bind(listen.addr)
            .await
            .with_context(|| format!("listening for metrics on {}", listen.addr))?;
        info!(addr = %listen.addr, tls = listen.tls, "serving /metrics and /health");
        let routes =
            tonic::service::Routes::from(crate::http::metrics_routes(ctx.clone(), hub.clone()));
        let never = std::future::pending::<()>();
        // Metrics listeners end with the process, like the peer ones.
        match (&client_tls, listen.tls) {
            (Some(tls), true) => tokio::spawn(serve(
                "metrics",
                routes,
                tls.clone().incoming(listener),
                never,
            )),
            _ => tokio::spawn(serve("metrics", routes, plain(listener), never)),
        };
    }
    info!(
        name = %config.name,
        member = %format!("{:x}", config.member_id),
        cluster = %format!("{:x}", config.cluster_id),
        "started; serving clients once the member's attributes are published"
    );

    let mut failure = None;
    tokio::select! {
        () = &mut shutdown => info!("shutting down"),
        _ = removed(raft.clone(), config.member_id, ctx.clone()) => {
            warn!("the member has been permanently removed from the cluster; shutting down");
        }
        fatal = raft_failed(raft.clone()) => {
            error!("raft stopped: {fatal}; exiting, so that a restart (once the cause is fixed) recovers from the log");
            failure = Some(fatal);
        }
    }
    if let Some(fatal) = failure {
        // Nothing more may touch the disk: a failed disk can make the
        // databases' last flush (also the one their handles do when
        // dropped) wait forever. What was acknowledged is in the log.
        std::mem::forget((ctx, raft, hub, lessor, backend, wal));
        return Err(RaftFailed(fatal).into());
    }
    let _ = stop_tx.send(true);
    // Open client connections would hold a graceful stop forever; give
    // in-flight requests a moment, then close what is left.
    for mut s in servers {
        if tokio::time::timeout(Duration::from_secs(2), &mut s)
            .await
            .is_err()
        {
            s.abort();
        }
    }
    if let Err(e) = raft.shutdown().await {
        warn!("raft shutdown: {e}");
    }
    for task in peer_servers {
        task.abort();
    }
    tokio::task::spawn_blocking(move || {
        log.close()
            .map_err(|e| anyhow::anyhow!("closing the raft log: {e}"))
    })
    .await??;
    let settling = mvcc.clone();
    tokio::task::spawn_blocking(move || settling.settle()).await?;
    backend.db().flush_async().await?;
    wal.flush_async().await?;
    // Raft has stopped: nothing writes the store any more. The next start
    // loads the key index instead of reading every record to rebuild it.
    let path = checkpoint_path(&config.data_dir.join("member"));
    let started = std::time::Instant::now();
    match tokio::task::spawn_blocking(move || mvcc.write_checkpoint(&path, APPLIED)).await? {
        Ok(w) => info!(
            keys = w.keys,
            bytes = w.bytes,
            ms = started.elapsed().as_millis() as u64,
            "wrote the key index checkpoint"
        ),
        Err(e) => warn!("no key index checkpoint written: {e}"),
    }
    Ok(())
}

/// Where the key index is checkpointed at a graceful stop.
pub(crate) fn checkpoint_path(member_dir: &Path) -> PathBuf {
    member_dir.join("key-index.checkpoint")
}

/// Raft stopped on its own (see [`raft_failed`]): the process must exit
/// without waiting for anything that touches the disk.
#[derive(Debug, thiserror::Error)]
#[error("raft stopped: {0}")]
pub struct RaftFailed(pub String);

/// Completes when raft stops on its own, with the reason: a storage error
/// (a full disk, say) ends raft's core, after which the member can serve
/// nothing. The process then exits, as etcd does on a failed disk write,
/// so its supervisor restarts it; what was acknowledged is in the log.
async fn raft_failed(raft: Raft) -> String {
    let metrics = raft.metrics();
    let mut tick = tokio::time::interval(METRICS_POLL);
    loop {
        tick.tick().await;
        let failed = match &metrics.borrow().running_state {
            Err(openraft::error::Fatal::Stopped) | Ok(()) => None,
            Err(fatal) => Some(fatal.to_string()),
        };
        if let Some(fatal) = failed {
            return fatal;
        }
        if metrics.has_changed().is_err() {
            return "raft's core ended".to_string();
        }
    }
}

/// Accepted plain-text connections, with TCP_NODELAY: without it, small
/// responses written in two parts wait on the client's delayed ACK (~40 ms).
fn plain(listener: TcpListener) -> impl Stream<Item = std::io::Result<TcpStream>> {
    TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|c| {
            let _ = c.set_nodelay(true);
        })
    })
}

/// Serves `routes` (gRPC and the HTTP endpoints) on `incoming` connections
/// until `stop` completes.
async fn serve<IO>(
    what: &'static str,
    routes: tonic::service::Routes,
    incoming: impl Stream<Item = std::io::Result<IO>> + Send + 'static,
    stop: impl Future<Output = ()> + Send + 'static,
) where
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
{
    if let Err(e) = tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, stop)
        .await
    {
        warn!("{what} listener: {e}");
    }
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
            api::WatchServer::new(api::WatchService::new(ctx.clone(), hub.clone()))
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
        .add_service(
            AuthServer::new(api::AuthService::new(ctx.clone()))
                .max_decoding_message_size(max_decode),
        );
    let mut routes = routes.routes();
    let grpc = std::mem::take(routes.axum_router_mut());
    let grpc = grpc.layer(crate::metrics::grpc::GrpcMetricsLayer);
    *routes.axum_router_mut() = crate::http::routes(grpc, ctx.clone(), hub.clone());
    routes
}

#[cfg(test)]
mod identity_tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_written_identity_reads_back_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write_identity(dir.path(), 0xabc, 0x123).unwrap();
        let raw = std::fs::read(dir.path().join(IDENTITY)).unwrap();
        assert_eq!(parse_identity(&raw).unwrap(), (0xabc, 0x123));
        let bad = br#"{"member_id": "xyz", "cluster_id": "1"}"#;
        let e = parse_identity(bad).unwrap_err();
        assert!(e.to_string().contains("member_id"), "{e}");
        assert!(parse_identity(&raw[..raw.len() / 2]).is_err());
    }

    proptest! {
        #[test]
        fn any_identity_file_never_panics(raw in prop::collection::vec(any::<u8>(), 0..120)) {
            let _ = parse_identity(&raw);
        }

        #[test]
        fn any_id_text_never_panics(member in ".{0,24}", cluster in ".{0,24}") {
            let raw = serde_json::json!({"member_id": member, "cluster_id": cluster}).to_string();
            let _ = parse_identity(raw.as_bytes());
        }
    }
}

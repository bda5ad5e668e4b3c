//! Command-line flags and `ETCD_*` environment variables, named and
//! defaulted as etcd's so ferrocd drops into existing manifests.

mod error;
mod ranges;
mod urls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::auth::flags::{AuthFlags, AuthSettings};
use crate::ids;
use crate::quota::Quota;
use crate::tls::flags::TlsSettings;
use crate::tls::TlsFlags;
pub use error::ConfigError;
pub use ranges::AutoCompaction;
pub use urls::cluster_members_from_flags;

/// etcd's default for `--max-request-bytes` (1.5 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: u32 = 1024 * 1024 + 512 * 1024;

/// The version ferrocd reports to clients as its etcd API version.
pub const ETCD_VERSION: &str = "3.6.0";

/// ferrocd's flags. Each long flag `--foo-bar` can also be given as the
/// environment variable `ETCD_FOO_BAR`; a flag on the command line wins.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "ferrocd",
    version,
    about = "An etcd-compatible distributed key-value store"
)]
pub struct Flags {
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,

    /// Path to the data directory (default: "<name>.etcd").
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// URLs to listen on for client traffic (comma-separated).
    #[arg(
        long,
        env = "ETCD_LISTEN_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    pub listen_client_urls: String,

    /// Client URLs of this member, advertised to the cluster and clients.
    #[arg(
        long,
        env = "ETCD_ADVERTISE_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    pub advertise_client_urls: String,

    /// URLs to listen on for peer traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub listen_peer_urls: String,

    /// Peer URLs of this member, advertised to the rest of the cluster.
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub initial_advertise_peer_urls: String,

    /// Initial cluster configuration for bootstrapping: name=url,name=url.
    /// Default: this member's name with its advertised peer URLs.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,

    /// Initial cluster state: "new" or "existing".
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new", value_parser = ["new", "existing"])]
    pub initial_cluster_state: String,

    /// Initial cluster token, mixed into member and cluster IDs.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,

    /// Recover from a lost quorum: start from this member's data as the
    /// only member of its cluster (same member and cluster ids, every
    /// other member removed); add members back with `member add`. Applied
    /// once: later starts with the flag still set keep the membership as
    /// it is then (etcd rewrites it at every start), and a start without
    /// the flag makes the next one with it force again. Without data, a
    /// normal start.
    #[arg(long, env = "ETCD_FORCE_NEW_CLUSTER", default_value_t = false,
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub force_new_cluster: bool,

    /// ferrocd's own: act as `--force-new-cluster` when this is the
    /// member's `--name` (pods sharing one template, one of them chosen by
    /// an operator); anything else, or empty, has no effect.
    #[arg(long, env = "FERROCD_FORCE_NEW_CLUSTER_MEMBER")]
    pub force_new_cluster_member: Option<String>,

    /// Maximum number of learners in the cluster (MemberAdd refuses more).
    #[arg(
        long,
        env = "ETCD_MAX_LEARNERS",
        default_value_t = 1,
        alias = "experimental-max-learners"
    )]
    pub max_learners: usize,

    /// Refuse membership changes that could cost the cluster its quorum.
    #[arg(long, env = "ETCD_STRICT_RECONFIG_CHECK", default_value_t = true,
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub strict_reconfig_check: bool,

    /// A restarted member campaigns only once a quorum has no live leader
    /// (etcd 3.5's default; etcd 3.4's is false).
    #[arg(long, env = "ETCD_PRE_VOTE", default_value_t = true,
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub pre_vote: bool,

    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: u32,

    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: u32,

    /// Log level: debug, info, warn, error, panic or fatal.
    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info",
          value_parser = ["debug", "info", "warn", "error", "panic", "fatal"])]
    pub log_level: String,

    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,

    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,

    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub snapshot_count: u64,

    /// Interval of progress notifications to watchers that asked for them
    /// (Go duration: 10m, 30s, 500ms).
    #[arg(long, env = "ETCD_WATCH_PROGRESS_NOTIFY_INTERVAL", default_value = "10m",
          alias = "experimental-watch-progress-notify-interval", value_parser = parse_duration)]
    pub watch_progress_notify_interval: Duration,

    /// Raise the NOSPACE alarm when the backend database exceeds this many
    /// bytes (0: the 2 GiB default; negative: no quota).
    #[arg(
        long,
        env = "ETCD_QUOTA_BACKEND_BYTES",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub quota_backend_bytes: i64,

    /// Auto compaction retention: a duration (or a number of hours) in
    /// periodic mode, a number of revisions in revision mode; 0 is off.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_RETENTION")]
    pub auto_compaction_retention: Option<String>,

    /// Interpret the auto compaction retention as a period ("periodic",
    /// the default) or a number of revisions ("revision").
    #[arg(long, env = "ETCD_AUTO_COMPACTION_MODE", value_parser = ["periodic", "revision"])]
    pub auto_compaction_mode: Option<String>,

    /// Before serving, compare this member's data with the other members'
    /// (hashes at its revision); refuse to start on a mismatch.
    #[arg(long, env = "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK",
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub experimental_initial_corrupt_check: Option<bool>,

    /// How often the leader compares the members' data (hashes), raising
    /// the CORRUPT alarm on a mismatch; 0 (the default) is never.
    #[arg(long, env = "ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME", value_parser = parse_duration)]
    pub experimental_corrupt_check_time: Option<Duration>,

    /// Accepted for compatibility: ferrocd logs through its own structured logger.
    #[arg(long, env = "ETCD_LOGGER", value_parser = ["zap", "capnslog"])]
    pub logger: Option<String>,

    /// Accepted for compatibility: ferrocd logs to stderr.
    #[arg(long, env = "ETCD_LOG_OUTPUTS")]
    pub log_outputs: Option<String>,

    /// URLs to serve /metrics and /health on, over plain HTTP (or HTTPS
    /// with the client certificate), beside the client port.
    #[arg(long, env = "ETCD_LISTEN_METRICS_URLS")]
    pub listen_metrics_urls: Option<String>,

    /// Detail of /metrics: "basic", or "extensive" to add the per-method
    /// gRPC latency histograms.
    #[arg(long, env = "ETCD_METRICS", default_value = "basic", value_parser = ["basic", "extensive"])]
    pub metrics: String,

    #[command(flatten)]
    pub tls: TlsFlags,

    #[command(flatten)]
    pub auth: AuthFlags,
}

/// A member named in `--initial-cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub id: u64,
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client: Vec<Listen>,
    /// `--listen-metrics-urls`.
    pub listen_metrics: Vec<Listen>,
    pub advertise_client_urls: Vec<String>,
    pub peer_urls: Vec<String>,
    pub listen_peer: Vec<Listen>,
    pub initial_cluster: Vec<InitialMember>,
    /// `--initial-cluster-state=existing`: join a running cluster.
    pub join_existing: bool,
    /// `--force-new-cluster`: become the only member (see [`Flags`]).
    pub force_new_cluster: bool,
    pub max_learners: usize,
    pub strict_reconfig_check: bool,
    pub pre_vote: bool,
    pub member_id: u64,
    pub cluster_id: u64,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    pub log_level: String,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    pub snapshot_count: u64,
    pub watch_progress_notify_interval: Duration,
    /// Certificates of the client and peer listeners.
    pub tls: TlsSettings,
    /// `--auto-compaction-mode` and `--auto-compaction-retention`.
    pub auto_compaction: Option<AutoCompaction>,
    /// `--experimental-initial-corrupt-check`: compare data with the other
    /// members before serving.
    pub initial_corrupt_check: bool,
    /// `--experimental-corrupt-check-time`: how often the leader compares
    /// the members' data; `None` for never.
    pub corrupt_check_interval: Option<Duration>,
    /// `--self-signed-cert-validity` in years, for `--auto-tls`.
    pub self_signed_cert_validity: u32,
    /// Tokens and password hashes of the Auth service.
    pub auth: AuthSettings,
    /// `--quota-backend-bytes`.
    pub quota: Quota,
    /// `--metrics`.
    pub metrics: crate::metrics::Detail,
    /// Notes about flags accepted but not acted on, to log at start.
    pub ignored: Vec<String>,
}

/// An address to listen on, and whether connections to it speak TLS
/// (an `https://` URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub addr: SocketAddr,
    pub tls: bool,
}

impl Flags {
    /// Parses process arguments, accepting Go-style single-dash long flags
    /// (`-name x`) as etcd does.
    pub fn from_args() -> Self {
        Flags::parse_from(normalize_args(std::env::args()))
    }
}

/// Rewrites `-flag` to `--flag`, as Go's flag package treats both alike.
pub fn normalize_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            let go_style =
                i > 0 && a.len() > 2 && a.starts_with('-') && a.as_bytes()[1].is_ascii_alphabetic();
            if go_style {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}

impl Config {
    /// Validates flags into a configuration, one flag group at a time.
    pub fn from_flags(f: Flags) -> Result<Config, ConfigError> {
        let tls = f.tls.settings().map_err(ConfigError::Tls)?;
        let mut notes = tls.notes.clone();
        let auth = f.auth.settings(&mut notes).map_err(ConfigError::Auth)?;
        let net = urls::listeners(&f, &tls, &mut notes)?;
        let (initial_cluster, member_id) = urls::initial_cluster(&f, &net.peer_urls)?;
        urls::peer_tls_for_https(&tls, &initial_cluster, &net.peer_urls)?;
        let timing = ranges::raft_timing(&f)?;
        let snapshot_count = ranges::snapshot_count(&f)?;
        let watch_progress_notify_interval = ranges::watch_progress_interval(&f)?;
        let limits = ranges::limits(&f)?;
        let auto_compaction = ranges::auto_compaction(&f)?;
        let corrupt_check_interval = ranges::corrupt_check_interval(&f)?;
        let quota = Quota::from_flag(f.quota_backend_bytes);
        notes.extend(quota.warning());
        notes.extend(ignored(&f));
        let force_new_cluster =
            f.force_new_cluster || f.force_new_cluster_member.as_deref() == Some(f.name.as_str());
        let cluster_id = ids::cluster_id(&initial_cluster.iter().map(|m| m.id).collect::<Vec<_>>());
        Ok(Config {
            data_dir: f
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", f.name))),
            name: f.name,
            listen_client: net.listen_client,
            advertise_client_urls: net.advertise_client_urls,
            peer_urls: net.peer_urls,
            listen_peer: net.listen_peer,
            initial_cluster,
            join_existing: f.initial_cluster_state == "existing",
            force_new_cluster,
            max_learners: limits.max_learners,
            strict_reconfig_check: f.strict_reconfig_check,
            pre_vote: f.pre_vote,
            member_id,
            cluster_id,
            max_request_bytes: limits.max_request_bytes,
            max_txn_ops: limits.max_txn_ops,
            log_level: f.log_level,
            heartbeat_interval_ms: timing.heartbeat_ms,
            election_timeout_ms: timing.election_ms,
            snapshot_count,
            watch_progress_notify_interval,
            listen_metrics: net.listen_metrics,
            auto_compaction,
            initial_corrupt_check: f.experimental_initial_corrupt_check == Some(true),
            corrupt_check_interval,
            self_signed_cert_validity: f.tls.self_signed_cert_validity,
            tls,
            auth,
            quota,
            metrics: if f.metrics == "extensive" {
                crate::metrics::Detail::Extensive
            } else {
                crate::metrics::Detail::Basic
            },
            ignored: notes,
        })
    }
}

/// Notes about flags accepted for compatibility but not acted on.
fn ignored(f: &Flags) -> Vec<String> {
    [
        ("logger", f.logger.is_some()),
        ("log-outputs", f.log_outputs.is_some()),
    ]
    .into_iter()
    .filter(|(_, set)| *set)
    .map(|(flag, _)| format!("--{flag} is accepted but has no effect yet"))
    .collect()
}

/// Go's longest duration (`math.MaxInt64` nanoseconds, about 292 years);
/// Go's `time.ParseDuration` refuses longer ones, and so does ours.
const MAX_GO_DURATION: Duration = Duration::from_nanos(i64::MAX as u64);

/// Parses a Go duration such as "10m", "1m30s", "250ms".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration {s:?} (expected e.g. 10m, 30s, 500ms)");
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(err());
    }
    if rest == "0" {
        return Ok(total);
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(err)?;
        let value: f64 = rest[..digits].parse().map_err(|_| err())?;
        let unit_end = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest.len(), |i| digits + i);
        let unit = match &rest[digits..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        // Out of range values are errors, not panics.
        total = Duration::try_from_secs_f64(value * unit)
            .ok()
            .and_then(|part| total.checked_add(part))
            .filter(|t| *t <= MAX_GO_DURATION)
            .ok_or_else(err)?;
        rest = &rest[unit_end..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Result<Flags, clap::Error> {
        let mut all = vec!["ferrocd".to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        Flags::try_parse_from(normalize_args(all))
    }

    #[test]
    fn defaults_are_etcds() {
        let c = Config::from_flags(flags(&[]).unwrap()).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("default.etcd"));
        assert_eq!(
            c.listen_client,
            vec![Listen {
                addr: "127.0.0.1:2379".parse().unwrap(),
                tls: false
            }]
        );
        assert_eq!(format!("{:x}", c.member_id), "8e9e05c52164694d");
        assert_eq!(c.max_request_bytes, 1_572_864);
        assert_eq!(c.max_txn_ops, 128);
    }

    #[test]
    fn the_quota_flag_reads_as_etcds() {
        let quota = |args: &[&str]| Config::from_flags(flags(args).unwrap()).unwrap().quota;
        assert_eq!(quota(&[]), Quota::Bytes(crate::quota::DEFAULT_QUOTA_BYTES));
        assert_eq!(quota(&["--quota-backend-bytes=4096"]), Quota::Bytes(4096));
        // Go's flag package takes a negative value after a space too.
        assert_eq!(quota(&["-quota-backend-bytes", "-1"]), Quota::Disabled);
        let big = Config::from_flags(flags(&["--quota-backend-bytes=9000000000"]).unwrap());
        assert!(big
            .unwrap()
            .ignored
            .iter()
            .any(|n| n.contains("maximum recommended")));
    }

    #[test]
    fn a_quota_beyond_64_bits_is_refused_naming_the_flag() {
        let err = flags(&["--quota-backend-bytes=99999999999999999999"]).unwrap_err();
        assert!(err.to_string().contains("--quota-backend-bytes"), "{err}");
        assert!(flags(&["--quota-backend-bytes=lots"]).is_err());
    }

    #[test]
    fn metrics_detail_is_basic_unless_extensive() {
        use crate::metrics::Detail;
        let detail = |args: &[&str]| Config::from_flags(flags(args).unwrap()).unwrap().metrics;
        assert_eq!(detail(&[]), Detail::Basic);
        assert_eq!(detail(&["--metrics", "basic"]), Detail::Basic);
        assert_eq!(detail(&["-metrics=extensive"]), Detail::Extensive);
        let e = flags(&["--metrics", "everything"]).unwrap_err().to_string();
        assert!(e.contains("[possible values: basic, extensive]"), "{e}");
    }

    #[test]
    fn go_style_single_dash_flags_work() {
        let c = Config::from_flags(flags(&["-name", "n1", "-data-dir=/tmp/x"]).unwrap()).unwrap();
        assert_eq!(c.name, "n1");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn unknown_and_malformed_flags_are_errors() {
        assert!(flags(&["--no-such-flag"]).is_err());
        assert!(flags(&["--max-txn-ops", "many"]).is_err());
        assert!(
            Config::from_flags(flags(&["--listen-client-urls", "127.0.0.1:2379"]).unwrap())
                .is_err()
        );
        assert!(Config::from_flags(flags(&["--cert-file", "x.pem"]).unwrap()).is_err());
        let https = flags(&["--listen-client-urls", "https://127.0.0.1:2379"]).unwrap();
        let e = Config::from_flags(https).unwrap_err().to_string();
        assert!(
            e.contains("must be provided for client url https://127.0.0.1:2379"),
            "{e}"
        );
        let unix = flags(&["--listen-client-urls", "unix://localhost:2379"]).unwrap();
        let e = Config::from_flags(unix).unwrap_err().to_string();
        assert!(e.contains("unix sockets are not supported"), "{e}");
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("2562047h").is_ok());
        assert!(parse_duration("2562048h").is_err());
        assert!(parse_duration("99999999999999999999999h").is_err());
        let c = Config::from_flags(
            flags(&["--experimental-watch-progress-notify-interval=5s"]).unwrap(),
        )
        .unwrap();
        assert_eq!(c.watch_progress_notify_interval, Duration::from_secs(5));
    }

    #[test]
    fn the_corruption_check_flags_take_effect() {
        let c = Config::from_flags(
            flags(&[
                "--experimental-initial-corrupt-check",
                "--experimental-corrupt-check-time=1m",
            ])
            .unwrap(),
        )
        .unwrap();
        assert!(c.initial_corrupt_check);
        assert_eq!(c.corrupt_check_interval, Some(Duration::from_secs(60)));
        assert!(
            c.ignored.iter().all(|n| !n.contains("corrupt")),
            "{:?}",
            c.ignored
        );
        let off =
            Config::from_flags(flags(&["--experimental-initial-corrupt-check=false"]).unwrap())
                .unwrap();
        assert!(!off.initial_corrupt_check);
        assert_eq!(off.corrupt_check_interval, None);
    }

    #[test]
    fn name_must_be_in_initial_cluster() {
        let f = flags(&[
            "--name",
            "a",
            "--initial-cluster",
            "b=http://127.0.0.1:2380",
        ])
        .unwrap();
        let err = Config::from_flags(f).unwrap_err();
        assert!(err.to_string().contains("couldn't find local name"));
    }

    #[test]
    fn three_member_ids_are_derived_from_the_whole_initial_cluster() {
        let cluster = "a=http://127.0.0.1:2380,b=http://127.0.0.1:2381,c=http://127.0.0.1:2382";
        let config = |name: &str, port: u16| {
            let url = format!("http://127.0.0.1:{port}");
            let f = flags(&[
                "--name",
                name,
                "--initial-cluster",
                cluster,
                "--initial-advertise-peer-urls",
                &url,
                "--initial-cluster-token",
                "t1",
            ])
            .unwrap();
            Config::from_flags(f).unwrap()
        };
        let (a, b, c) = (config("a", 2380), config("b", 2381), config("c", 2382));
        // Every member computes the same cluster id, and distinct member ids.
        assert_eq!(a.cluster_id, b.cluster_id);
        assert_eq!(b.cluster_id, c.cluster_id);
        assert_ne!(a.member_id, b.member_id);
        assert_eq!(a.initial_cluster.len(), 3);
        assert!(!a.join_existing);
        assert_eq!(
            a.member_id,
            ids::member_id(&["http://127.0.0.1:2380".to_string()], "t1")
        );
    }

    #[test]
    fn existing_state_and_max_learners_parse() {
        let f = flags(&[
            "--initial-cluster-state=existing",
            "--max-learners=2",
            "--strict-reconfig-check=false",
            "--pre-vote=false",
        ])
        .unwrap();
        let c = Config::from_flags(f).unwrap();
        assert!(c.join_existing);
        assert!(!c.force_new_cluster);
        assert_eq!(c.max_learners, 2);
        assert!(!c.strict_reconfig_check);
        assert!(!c.pre_vote);
        let defaults = Config::from_flags(flags(&[]).unwrap()).unwrap();
        assert!(defaults.strict_reconfig_check && defaults.pre_vote);
        assert!(flags(&["--initial-cluster-state=joining"]).is_err());
        for (args, want) in [
            (&["--force-new-cluster"][..], true),
            (&["-force-new-cluster=true"][..], true),
            (&["--force-new-cluster=false"][..], false),
        ] {
            let c = Config::from_flags(flags(args).unwrap()).unwrap();
            assert_eq!(c.force_new_cluster, want, "{args:?}");
        }
        let member = |args: &[&str]| {
            let mut all = vec!["--name=m-1"];
            all.extend(args);
            Config::from_flags(flags(&all).unwrap())
                .unwrap()
                .force_new_cluster
        };
        assert!(member(&["--force-new-cluster-member=m-1"]));
        assert!(!member(&["--force-new-cluster-member=m-0"]));
        assert!(!member(&["--force-new-cluster-member="]));
        assert!(Config::from_flags(flags(&["--max-learners=0"]).unwrap()).is_err());
    }

    #[test]
    fn out_of_range_values_are_refused_before_anything_starts() {
        for bad in [
            "--experimental-watch-progress-notify-interval=0",
            "--heartbeat-interval=0",
            "--election-timeout=60000",
            "--snapshot-count=0",
            "--max-request-bytes=0",
        ] {
            assert!(
                Config::from_flags(flags(&[bad]).unwrap()).is_err(),
                "{bad} was accepted"
            );
        }
        let err = Config::from_flags(
            flags(&["--experimental-watch-progress-notify-interval=0"]).unwrap(),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::DurationTooShort {
                flag: "watch-progress-notify-interval",
                ..
            }
        ));
    }
}

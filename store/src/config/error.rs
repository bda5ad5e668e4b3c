//! Why a configuration was refused. The texts follow etcd's where etcd has
//! one for the same mistake.

use std::time::Duration;

/// A configuration error, printed to the user before exiting with code 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A TLS flag or combination of them (see `tls::flags`).
    #[error("{0}")]
    Tls(String),
    /// An auth flag (`--auth-token`, `--bcrypt-cost`, ...).
    #[error("{0}")]
    Auth(String),
    #[error("--{flag}: invalid URL {url:?}: {source}")]
    InvalidUrl {
        flag: &'static str,
        url: String,
        source: url::ParseError,
    },
    #[error("TLS key/cert ({files}) must be provided for {side} url {url} with HTTPS scheme")]
    HttpsWithoutCert {
        files: &'static str,
        side: &'static str,
        url: String,
    },
    #[error("--{flag}: {url}: unix sockets are not supported by ferrocd; use http:// or https://")]
    UnixSocket { flag: &'static str, url: String },
    #[error("--{flag}: {url}: URL scheme must be http or https: {scheme}")]
    UrlScheme {
        flag: &'static str,
        url: String,
        scheme: String,
    },
    #[error("invalid auto-compaction-retention {retention:?} for --auto-compaction-mode={mode}")]
    AutoCompactionRetention { mode: String, retention: String },
    #[error("--{flag} must not be empty")]
    Empty { flag: &'static str },
    #[error("--{flag}: {url}: missing port in address")]
    MissingPort { flag: &'static str, url: String },
    #[error("--{flag}: {url}: expected an IP address or localhost to listen on")]
    NotListenable { flag: &'static str, url: String },
    #[error("--initial-cluster: {part:?} is not name=url")]
    NotNameUrl { part: String },
    #[error("couldn't find local name {name:?} in the initial cluster configuration")]
    NameNotInCluster { name: String },
    #[error("--initial-cluster has {name}={cluster_urls} but missing from --initial-advertise-peer-urls={advertised} (URLs must match)")]
    PeerUrlMismatch {
        name: String,
        cluster_urls: String,
        advertised: String,
    },
    #[error("--{flag} must be greater than 0")]
    Zero { flag: &'static str },
    #[error("--election-timeout[{election_ms}ms] should be at least as 5 times as --heartbeat-interval[{heartbeat_ms}ms]")]
    ElectionBelowFiveHeartbeats { election_ms: u64, heartbeat_ms: u64 },
    #[error(
        "--election-timeout[{election_ms}ms] is too long, and should be set less than {max_ms}ms"
    )]
    ElectionTooLong { election_ms: u64, max_ms: u64 },
    #[error("--{flag}={value:?} is too short: it must be at least {min:?}")]
    DurationTooShort {
        flag: &'static str,
        value: Duration,
        min: Duration,
    },
}

//! Validators for the numeric and duration flags, one per group. A value
//! out of range is refused at startup: taken as given, some would panic or
//! stall a task long after the server came up (a zero tick interval), or
//! make the member useless (a snapshot after every entry).

use std::time::Duration;

use super::{ConfigError, Flags};
use crate::watch::MIN_PROGRESS_INTERVAL;

/// etcd's `maxElectionMs`: longer election timeouts are refused.
pub const MAX_ELECTION_MS: u64 = 50_000;

/// Raft timing, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_ms: u64,
}

/// `--heartbeat-interval` and `--election-timeout`, by etcd's rules: the
/// election timeout is at least five heartbeats and under 50 s.
pub fn raft_timing(f: &Flags) -> Result<RaftTiming, ConfigError> {
    let (heartbeat_ms, election_ms) = (f.heartbeat_interval, f.election_timeout);
    if heartbeat_ms == 0 {
        return Err(ConfigError::Zero {
            flag: "heartbeat-interval",
        });
    }
    if heartbeat_ms
        .checked_mul(5)
        .is_none_or(|least| election_ms < least)
    {
        return Err(ConfigError::ElectionBelowFiveHeartbeats {
            election_ms,
            heartbeat_ms,
        });
    }
    if election_ms > MAX_ELECTION_MS {
        return Err(ConfigError::ElectionTooLong {
            election_ms,
            max_ms: MAX_ELECTION_MS,
        });
    }
    Ok(RaftTiming {
        heartbeat_ms,
        election_ms,
    })
}

/// `--snapshot-count`: zero would snapshot after every entry.
pub fn snapshot_count(f: &Flags) -> Result<u64, ConfigError> {
    match f.snapshot_count {
        0 => Err(ConfigError::Zero {
            flag: "snapshot-count",
        }),
        n => Ok(n),
    }
}

/// `--watch-progress-notify-interval`: at least etcd's minimum period. Its
/// upper end is Go's longest duration, which parsing already enforces.
pub fn watch_progress_interval(f: &Flags) -> Result<Duration, ConfigError> {
    let value = f.watch_progress_notify_interval;
    if value < MIN_PROGRESS_INTERVAL {
        return Err(ConfigError::DurationTooShort {
            flag: "watch-progress-notify-interval",
            value,
            min: MIN_PROGRESS_INTERVAL,
        });
    }
    Ok(value)
}

/// The shortest `--experimental-corrupt-check-time` taken: each check
/// hashes the whole store on every member, so a shorter period would keep
/// the leader scanning without a pause.
pub const MIN_CORRUPT_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// `--experimental-corrupt-check-time`: 0 (the default) turns the periodic
/// check off; otherwise at least [`MIN_CORRUPT_CHECK_INTERVAL`].
pub fn corrupt_check_interval(f: &Flags) -> Result<Option<Duration>, ConfigError> {
    match f.experimental_corrupt_check_time {
        None => Ok(None),
        Some(value) if value.is_zero() => Ok(None),
        Some(value) if value < MIN_CORRUPT_CHECK_INTERVAL => Err(ConfigError::DurationTooShort {
            flag: "experimental-corrupt-check-time",
            value,
            min: MIN_CORRUPT_CHECK_INTERVAL,
        }),
        Some(value) => Ok(Some(value)),
    }
}

/// `--auto-compaction-mode` and `--auto-compaction-retention`, read as
/// etcd reads them: in `periodic` mode (the default) a Go duration, or a
/// bare number of hours; in `revision` mode a number of revisions. A
/// retention of 0 (the default) turns automatic compaction off.
pub fn auto_compaction(f: &Flags) -> Result<Option<AutoCompaction>, ConfigError> {
    let retention = f.auto_compaction_retention.as_deref().unwrap_or("0").trim();
    let mode = f.auto_compaction_mode.as_deref().unwrap_or("periodic");
    let bad = || ConfigError::AutoCompactionRetention {
        mode: mode.to_string(),
        retention: retention.to_string(),
    };
    let compaction = if mode == "revision" {
        let revisions: i64 = retention.parse().map_err(|_| bad())?;
        if revisions < 0 {
            return Err(bad());
        }
        (revisions > 0).then_some(AutoCompaction::Revision(revisions))
    } else {
        let period = match retention.parse::<u64>() {
            Ok(hours) => Duration::from_secs(hours.checked_mul(3600).ok_or_else(bad)?),
            Err(_) => super::parse_duration(retention).map_err(|_| bad())?,
        };
        (!period.is_zero()).then_some(AutoCompaction::Periodic(period))
    };
    Ok(compaction)
}

/// How history is compacted without a client asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep this much time of history.
    Periodic(Duration),
    /// Keep this many revisions of history.
    Revision(i64),
}

/// Per-request limits and the learner limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    pub max_learners: usize,
}

/// `--max-request-bytes`, `--max-txn-ops`, `--max-learners`: zero would
/// refuse every request (or every learner).
pub fn limits(f: &Flags) -> Result<Limits, ConfigError> {
    for (flag, value) in [
        ("max-request-bytes", u64::from(f.max_request_bytes)),
        ("max-txn-ops", u64::from(f.max_txn_ops)),
        ("max-learners", f.max_learners as u64),
    ] {
        if value == 0 {
            return Err(ConfigError::Zero { flag });
        }
    }
    Ok(Limits {
        max_request_bytes: f.max_request_bytes as usize,
        max_txn_ops: f.max_txn_ops as usize,
        max_learners: f.max_learners,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn flags(args: &[&str]) -> Flags {
        flags_result(args).expect("flags parse")
    }

    fn flags_result(args: &[&str]) -> Result<Flags, clap::Error> {
        let all = std::iter::once("ferrocd").chain(args.iter().copied());
        Flags::try_parse_from(all)
    }

    #[test]
    fn auto_compaction_retention_reads_as_etcds() {
        assert_eq!(auto_compaction(&flags(&[])).unwrap(), None);
        let hours = flags(&["--auto-compaction-retention=2"]);
        assert_eq!(
            auto_compaction(&hours).unwrap(),
            Some(AutoCompaction::Periodic(Duration::from_secs(7200)))
        );
        let minutes = flags(&["--auto-compaction-retention=30m"]);
        assert_eq!(
            auto_compaction(&minutes).unwrap(),
            Some(AutoCompaction::Periodic(Duration::from_secs(1800)))
        );
        let revisions = flags(&[
            "--auto-compaction-mode=revision",
            "--auto-compaction-retention=1000",
        ]);
        assert_eq!(
            auto_compaction(&revisions).unwrap(),
            Some(AutoCompaction::Revision(1000))
        );
        let bad = flags(&[
            "--auto-compaction-mode=revision",
            "--auto-compaction-retention=1h",
        ]);
        assert!(auto_compaction(&bad).is_err());
        assert!(auto_compaction(&flags(&["--auto-compaction-retention=soon"])).is_err());
    }

    #[test]
    fn default_timing_is_etcds() {
        let t = raft_timing(&flags(&[])).unwrap();
        assert_eq!((t.heartbeat_ms, t.election_ms), (100, 1000));
    }

    #[test]
    fn a_zero_heartbeat_is_refused() {
        let f = flags(&["--heartbeat-interval=0", "--election-timeout=0"]);
        assert_eq!(
            raft_timing(&f).unwrap_err().to_string(),
            "--heartbeat-interval must be greater than 0"
        );
    }

    #[test]
    fn an_election_timeout_under_five_heartbeats_is_refused_with_etcds_text() {
        let f = flags(&["--heartbeat-interval=100", "--election-timeout=499"]);
        assert_eq!(
            raft_timing(&f).unwrap_err().to_string(),
            "--election-timeout[499ms] should be at least as 5 times as --heartbeat-interval[100ms]"
        );
    }

    #[test]
    fn a_huge_heartbeat_is_refused_without_overflow() {
        let huge = format!("--heartbeat-interval={}", u64::MAX);
        let f = flags(&[&huge, "--election-timeout=1000"]);
        assert!(matches!(
            raft_timing(&f),
            Err(ConfigError::ElectionBelowFiveHeartbeats { .. })
        ));
    }

    #[test]
    fn an_election_timeout_over_50_s_is_refused_with_etcds_text() {
        let f = flags(&["--election-timeout=50001"]);
        assert_eq!(
            raft_timing(&f).unwrap_err().to_string(),
            "--election-timeout[50001ms] is too long, and should be set less than 50000ms"
        );
        assert!(raft_timing(&flags(&["--election-timeout=50000"])).is_ok());
    }

    #[test]
    fn a_zero_snapshot_count_is_refused() {
        let f = flags(&["--snapshot-count=0"]);
        assert_eq!(
            snapshot_count(&f),
            Err(ConfigError::Zero {
                flag: "snapshot-count"
            })
        );
        assert_eq!(snapshot_count(&flags(&["--snapshot-count=1"])), Ok(1));
    }

    #[test]
    fn a_progress_interval_under_100_ms_is_refused() {
        for value in ["0", "0s", "99ms", "1ns"] {
            let f = flags(&[&format!(
                "--experimental-watch-progress-notify-interval={value}"
            )]);
            let err = watch_progress_interval(&f).unwrap_err();
            assert!(
                err.to_string()
                    .contains("--watch-progress-notify-interval=")
                    && err.to_string().contains("at least 100ms"),
                "{value}: {err}"
            );
        }
        let f = flags(&["--watch-progress-notify-interval=100ms"]);
        assert_eq!(watch_progress_interval(&f), Ok(Duration::from_millis(100)));
    }

    #[test]
    fn the_corrupt_check_period_is_off_at_zero_and_at_least_100_ms_otherwise() {
        assert_eq!(corrupt_check_interval(&flags(&[])), Ok(None));
        let off = flags(&["--experimental-corrupt-check-time=0s"]);
        assert_eq!(corrupt_check_interval(&off), Ok(None));
        let every = flags(&["--experimental-corrupt-check-time=2m30s"]);
        assert_eq!(
            corrupt_check_interval(&every),
            Ok(Some(Duration::from_secs(150)))
        );
        for value in ["1ns", "99ms"] {
            let f = flags(&[&format!("--experimental-corrupt-check-time={value}")]);
            let err = corrupt_check_interval(&f).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("--experimental-corrupt-check-time=")
                    && err.to_string().contains("at least 100ms"),
                "{value}: {err}"
            );
        }
        assert!(flags_result(&["--experimental-corrupt-check-time=soon"]).is_err());
    }

    #[test]
    fn zero_request_limits_are_refused() {
        for flag in ["max-request-bytes", "max-txn-ops", "max-learners"] {
            let f = flags(&[&format!("--{flag}=0")]);
            assert_eq!(limits(&f), Err(ConfigError::Zero { flag }));
        }
        let l = limits(&flags(&[])).unwrap();
        assert_eq!((l.max_txn_ops, l.max_learners), (128, 1));
    }
}

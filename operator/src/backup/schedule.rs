//! The pure side of scheduled backups: cron expressions, when the next run
//! is due, the names of scheduled backups (the cluster and the scheduled
//! time, so names sort by time and carry it), and which snapshots the
//! retention lets go.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::jiff::Timestamp;

use crate::crd::{parse_duration, Retention, DEFAULT_RETENTION_COUNT};

/// Why a schedule can not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Not five fields.
    #[error("schedule {0:?}: want 5 fields (minute hour day-of-month month day-of-week)")]
    FieldCount(String),
    /// The cron parser refused it.
    #[error("schedule {expression:?}: {reason}")]
    Invalid {
        /// The expression.
        expression: String,
        /// The parser's complaint.
        reason: String,
    },
    /// `retention.maxAge` is not a duration.
    #[error("retention.maxAge {0:?} is not a duration like 168h")]
    MaxAge(String),
}

/// A parsed 5-field cron schedule, in UTC.
#[derive(Debug, Clone)]
pub struct Schedule(cron::Schedule);

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(expression: &str) -> Result<Self, ScheduleError> {
        if expression.split_whitespace().count() != 5 {
            return Err(ScheduleError::FieldCount(expression.to_string()));
        }
        // The cron crate counts seconds first; scheduled backups start on the minute.
        cron::Schedule::from_str(&format!("0 {expression}"))
            .map(Schedule)
            .map_err(|e| ScheduleError::Invalid {
                expression: expression.to_string(),
                reason: e.to_string(),
            })
    }
}

/// What the scheduler does now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start the backup scheduled for this time.
    Run(Timestamp),
    /// Nothing is due; look again after this long.
    Wait(Duration),
}

impl Schedule {
    /// The first scheduled time strictly after `after`.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let after = DateTime::<Utc>::from_timestamp(after.as_second(), 0)?;
        let next = self.0.after(&after).next()?;
        Timestamp::from_second(next.timestamp()).ok()
    }

    /// Whether a run is due at `now`, the last one having been scheduled at
    /// `last` (or the schedule having started at `since`). Missed runs
    /// while the operator was away collapse into one, for the latest time.
    pub fn decide(&self, last: Option<Timestamp>, since: Timestamp, now: Timestamp) -> Decision {
        let mut due = None;
        let mut cursor = last.unwrap_or(since);
        // Bounded: a schedule every minute missed for a week is 10080 steps.
        for _ in 0..20_000 {
            match self.next_after(cursor) {
                Some(next) if next <= now => {
                    due = Some(next);
                    cursor = next;
                }
                Some(next) => {
                    return match due {
                        Some(at) => Decision::Run(at),
                        None => Decision::Wait(
                            Duration::from_secs(
                                u64::try_from(next.as_second() - now.as_second()).unwrap_or(0),
                            )
                            .max(Duration::from_secs(1)),
                        ),
                    };
                }
                None => break,
            }
        }
        match due {
            Some(at) => Decision::Run(at),
            None => Decision::Wait(Duration::from_secs(3600)),
        }
    }
}

/// Name of the backup of `cluster` scheduled at `at`: `<cluster>-YYYYMMDD-hhmmss`.
pub fn backup_name(cluster: &str, at: Timestamp) -> String {
    format!("{cluster}-{}", at.strftime("%Y%m%d-%H%M%S"))
}

/// The scheduled time in a name [`backup_name`] made for `cluster`; also
/// accepts the snapshot file's name (`.db`).
pub fn scheduled_time(cluster: &str, name: &str) -> Option<Timestamp> {
    let stamp = name.strip_prefix(cluster)?.strip_prefix('-')?;
    let stamp = stamp.strip_suffix(".db").unwrap_or(stamp);
    let bytes = stamp.as_bytes();
    if bytes.len() != 15 || bytes[8] != b'-' {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = &stamp[range];
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
    let (hour, minute, second) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    let text = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z");
    text.parse().ok()
}

/// Which of `snapshots` (name and scheduled time) the retention deletes at
/// `now`: all but the newest `maxCount`, and those older than `maxAge`;
/// never the newest.
pub fn expired(
    snapshots: &[(String, Timestamp)],
    retention: &Retention,
    now: Timestamp,
) -> Result<Vec<String>, ScheduleError> {
    let max_age = match &retention.max_age {
        Some(text) => {
            Some(parse_duration(text).ok_or_else(|| ScheduleError::MaxAge(text.clone()))?)
        }
        None => None,
    };
    let max_count = retention
        .max_count
        .unwrap_or(DEFAULT_RETENTION_COUNT)
        .max(1) as usize;
    let mut newest_first: Vec<&(String, Timestamp)> = snapshots.iter().collect();
    newest_first.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    Ok(newest_first
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(index, (_, at))| {
            let too_many = *index >= max_count;
            let too_old = max_age.is_some_and(|age| {
                now.as_second() - at.as_second() > i64::try_from(age.as_secs()).unwrap_or(i64::MAX)
            });
            too_many || too_old
        })
        .map(|(_, (name, _))| name.clone())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn five_field_schedules_parse_and_others_do_not() {
        assert!("*/5 * * * *".parse::<Schedule>().is_ok());
        assert_eq!(
            "0 */5 * * * *".parse::<Schedule>().unwrap_err(),
            ScheduleError::FieldCount("0 */5 * * * *".into())
        );
        assert!(matches!(
            "61 * * * *".parse::<Schedule>(),
            Err(ScheduleError::Invalid { .. })
        ));
    }

    #[test]
    fn next_run_follows_the_expression_in_utc() {
        let schedule: Schedule = "30 2 * * *".parse().unwrap();
        assert_eq!(
            schedule.next_after(at("2026-12-06T18:00:00Z")),
            Some(at("2026-12-07T02:30:00Z"))
        );
    }

    #[test]
    fn nothing_due_waits_until_the_next_time() {
        let schedule: Schedule = "*/10 * * * *".parse().unwrap();
        let decision = schedule.decide(
            Some(at("2026-12-06T18:00:00Z")),
            at("2026-12-01T00:00:00Z"),
            at("2026-12-06T18:04:00Z"),
        );
        assert_eq!(decision, Decision::Wait(Duration::from_secs(360)));
    }

    #[test]
    fn missed_runs_collapse_into_the_latest() {
        let schedule: Schedule = "*/10 * * * *".parse().unwrap();
        let decision = schedule.decide(
            Some(at("2026-12-06T18:00:00Z")),
            at("2026-12-01T00:00:00Z"),
            at("2026-12-06T18:35:00Z"),
        );
        assert_eq!(decision, Decision::Run(at("2026-12-06T18:30:00Z")));
    }

    #[test]
    fn first_run_counts_from_when_the_schedule_started() {
        let schedule: Schedule = "0 * * * *".parse().unwrap();
        let since = at("2026-12-06T18:20:00Z");
        assert!(matches!(
            schedule.decide(None, since, at("2026-12-06T18:59:00Z")),
            Decision::Wait(_)
        ));
        assert_eq!(
            schedule.decide(None, since, at("2026-12-06T19:00:05Z")),
            Decision::Run(at("2026-12-06T19:00:00Z"))
        );
    }

    #[test]
    fn names_carry_the_scheduled_time() {
        let when = at("2026-12-06T18:30:00Z");
        let name = backup_name("demo", when);
        assert_eq!(name, "demo-20261206-183000");
        assert_eq!(scheduled_time("demo", &name), Some(when));
        assert_eq!(scheduled_time("demo", &format!("{name}.db")), Some(when));
        assert_eq!(scheduled_time("demo-2", &name), None);
        assert_eq!(scheduled_time("demo", "demo-manual"), None);
    }

    #[test]
    fn retention_keeps_the_newest_by_count_and_age() {
        let snapshots: Vec<(String, Timestamp)> = (0..5)
            .map(|h| {
                let when = at(&format!("2026-12-06T1{h}:00:00Z"));
                (backup_name("demo", when), when)
            })
            .collect();
        let now = at("2026-12-06T14:30:00Z");
        let by_count = Retention {
            max_count: Some(3),
            max_age: None,
        };
        assert_eq!(
            expired(&snapshots, &by_count, now).unwrap(),
            ["demo-20261206-110000", "demo-20261206-100000"]
        );
        let by_age = Retention {
            max_count: Some(10),
            max_age: Some("2h".into()),
        };
        assert_eq!(
            expired(&snapshots, &by_age, now).unwrap(),
            [
                "demo-20261206-120000",
                "demo-20261206-110000",
                "demo-20261206-100000"
            ]
        );
        let everything_old = Retention {
            max_count: None,
            max_age: Some("1m".into()),
        };
        let kept = expired(&snapshots, &everything_old, at("2027-01-01T00:00:00Z")).unwrap();
        assert_eq!(kept.len(), 4, "the newest is always kept");
    }
}

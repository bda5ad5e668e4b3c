//! `spec.rollout`: the bounds of a rolling restart (a new image, new flags,
//! turning TLS on), each defaulting to the constant of `crate::rollout`.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::tls::{parse_duration, DURATION_PATTERN};
use crate::rollout::{Bounds, MAX_LAG, READY_TIMEOUT};

/// How careful a rolling restart is.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// How long a restarted member's pod may take to become ready before
    /// the rollout stops, e.g. `5m` (default `180s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub ready_timeout: Option<String>,
    /// Raft entries a member's applied index may trail the leader's and
    /// still count as caught up for the next restart (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_lag: Option<u64>,
}

/// Why `spec.rollout` can not be acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutSpecError {
    /// `readyTimeout` is not `<n>h`, `<n>m`, `<n>s` parts, or is zero.
    #[error("spec.rollout.readyTimeout: {0:?} is not a positive duration like 180s or 5m")]
    ReadyTimeout(String),
    /// `maxLag` is zero: no member would ever count as caught up.
    #[error("spec.rollout.maxLag must be at least 1")]
    MaxLag,
}

impl RolloutSpec {
    /// The bounds, defaults applied, checked.
    pub fn bounds(&self) -> Result<Bounds, RolloutSpecError> {
        let ready_timeout = match &self.ready_timeout {
            None => READY_TIMEOUT,
            Some(text) => parse_duration(text)
                .filter(|d| *d > Duration::ZERO)
                .ok_or_else(|| RolloutSpecError::ReadyTimeout(text.clone()))?,
        };
        let max_lag = match self.max_lag {
            None => MAX_LAG,
            Some(0) => return Err(RolloutSpecError::MaxLag),
            Some(lag) => lag,
        };
        Ok(Bounds {
            ready_timeout,
            max_lag,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_bounds_are_the_constants_of_today() {
        let bounds = RolloutSpec::default().bounds().unwrap();
        assert_eq!(bounds, Bounds::default());
        assert_eq!(bounds.ready_timeout, Duration::from_secs(180));
        assert_eq!(bounds.max_lag, 1000);
    }

    #[test]
    fn set_bounds_are_parsed_and_checked() {
        let spec = RolloutSpec {
            ready_timeout: Some("5m".into()),
            max_lag: Some(50),
        };
        assert_eq!(
            spec.bounds().unwrap(),
            Bounds {
                ready_timeout: Duration::from_secs(300),
                max_lag: 50
            }
        );
        let zero = RolloutSpec {
            ready_timeout: Some("0s".into()),
            ..Default::default()
        };
        assert!(matches!(
            zero.bounds(),
            Err(RolloutSpecError::ReadyTimeout(_))
        ));
        let no_lag = RolloutSpec {
            max_lag: Some(0),
            ..Default::default()
        };
        assert_eq!(no_lag.bounds(), Err(RolloutSpecError::MaxLag));
    }
}

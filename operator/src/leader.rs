//! Leader election over a `coordination.k8s.io/v1` Lease, so only one
//! operator replica reconciles at a time (kube-runtime has none built in).
//!
//! The replica holding the Lease renews it every few seconds; another takes
//! it over once it has gone unrenewed for its full duration. Every write
//! carries the `resourceVersion` that was read, so two candidates racing for
//! an expired Lease can not both win. A leader that stops (SIGTERM ends the
//! controller) releases the Lease, so a standby takes over at its next try
//! instead of after the Lease expires.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// What a candidate should do about the Lease it just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds a valid Lease: take it.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds a valid Lease: wait.
    Wait,
}

/// What a candidate reads from the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    /// Current holder, if any.
    pub holder: Option<String>,
    /// When the holder last renewed.
    pub renew_time: Option<Timestamp>,
    /// How long a renewal stays valid.
    pub duration: Duration,
}

impl LeaseState {
    fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.or(spec.acquire_time).map(|t| t.0),
            duration: Duration::from_secs(
                spec.lease_duration_seconds.unwrap_or_default().max(0) as u64
            ),
        }
    }
}

/// The pure rule: acquire a missing, unheld or expired Lease, renew our own,
/// wait while another holder's Lease is valid.
pub fn decide(lease: Option<&LeaseState>, now: Timestamp, identity: &str) -> Decision {
    let Some(lease) = lease else {
        return Decision::Acquire;
    };
    match (&lease.holder, lease.renew_time) {
        (Some(holder), _) if holder == identity => Decision::Renew,
        (None, _) | (_, None) => Decision::Acquire,
        (Some(_), Some(renewed)) => {
            let expires = SignedDuration::try_from(lease.duration)
                .ok()
                .and_then(|d| renewed.checked_add(d).ok())
                .unwrap_or(Timestamp::MAX);
            if expires <= now {
                Decision::Acquire
            } else {
                Decision::Wait
            }
        }
    }
}

/// One candidate for the Lease `namespace/name`.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    renew_interval: Duration,
}

/// Why leadership ended.
#[derive(Debug, thiserror::Error)]
pub enum LostLease {
    /// Another candidate holds the Lease, or renewals failed past its duration.
    #[error("lost the leader Lease {0}")]
    Lost(String),
}

impl LeaderElector {
    /// A candidate `identity` for Lease `name` in `namespace`: 15s Leases renewed every 5s.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(5),
        }
    }

    /// Waits until this candidate holds the Lease, then runs `work` while
    /// renewing it. Returns when `work` ends, after releasing the Lease, or
    /// with an error when the Lease is lost; the caller should exit then, as
    /// a deposed leader must stop.
    pub async fn run<F: Future>(&self, work: F) -> Result<F::Output, LostLease> {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "leader election: reading the Lease failed"),
            }
            tokio::time::sleep(self.renew_interval).await;
        }
        tracing::info!(identity = %self.identity, lease = %self.name, "became leader");
        let output = tokio::select! {
            output = work => output,
            lost = self.keep_renewing() => return Err(lost),
        };
        match tokio::time::timeout(self.renew_interval, self.release()).await {
            Ok(Ok(true)) => tracing::info!(lease = %self.name, "released the leader Lease"),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "leader election: releasing the Lease failed"),
            Err(_) => tracing::warn!("leader election: releasing the Lease timed out"),
        }
        Ok(output)
    }

    /// Gives up the Lease if we hold it, as client-go's `ReleaseOnCancel`
    /// does: no holder and a one-second duration, so any candidate acquires
    /// it at once. `Ok(true)` when released; a Lease someone else holds (or
    /// wrote since we read it) is left alone.
    async fn release(&self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(false);
        };
        if LeaseState::of(&lease).holder.as_deref() != Some(self.identity.as_str()) {
            return Ok(false);
        }
        let now = MicroTime(Timestamp::now());
        let transitions = lease.spec.as_ref().and_then(|s| s.lease_transitions);
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: transitions,
            ..Default::default()
        });
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    async fn keep_renewing(&self) -> LostLease {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.renew_interval).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => return LostLease::Lost(self.name.clone()),
                Err(error) => {
                    tracing::warn!(%error, "leader election: renewing the Lease failed");
                    // Others may take the Lease once it expires; stop before.
                    if last_renewal.elapsed() + self.renew_interval >= self.lease_duration {
                        return LostLease::Lost(self.name.clone());
                    }
                }
            }
        }
    }

    /// Reads the Lease and acts on [`decide`]; `Ok(true)` when we hold it afterwards.
    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let state = current.as_ref().map(LeaseState::of);
        let decision = decide(state.as_ref(), now, &self.identity);
        let result = match (decision, current) {
            (Decision::Wait, _) => return Ok(false),
            (Decision::Acquire, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(now, now, 0)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (Decision::Acquire, Some(mut lease)) => {
                let transitions = lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.lease_transitions)
                    .unwrap_or_default();
                lease.spec = Some(self.spec(now, now, transitions + 1));
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            (Decision::Renew, Some(mut lease)) => {
                let spec = lease.spec.clone().unwrap_or_default();
                let acquired = spec.acquire_time.map_or(now, |t| t.0);
                let transitions = spec.lease_transitions.unwrap_or_default();
                lease.spec = Some(self.spec(acquired, now, transitions));
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            (Decision::Renew, None) => unreachable!("decide renews only an existing Lease"),
        };
        match result {
            Ok(_) => Ok(true),
            // Someone else wrote the Lease between our read and write.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    fn spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_duration.as_secs() as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{json, Value};

    use super::*;

    const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";

    /// Answers one request: checks method and path, replies with `status` and
    /// `reply` (`None`: echo the request body); returns the request body.
    async fn answer(
        handle: &mut tower_test::mock::Handle<Request<Body>, Response<Body>>,
        method: Method,
        path: &str,
        status: StatusCode,
        reply: Option<Value>,
    ) -> Value {
        let (request, send) = handle.next_request().await.expect("a request");
        assert_eq!((request.method(), request.uri().path()), (&method, path));
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let out = reply.map_or(bytes.to_vec(), |v| serde_json::to_vec(&v).unwrap());
        let mut response = Response::new(Body::from(out));
        *response.status_mut() = status;
        send.send_response(response);
        body
    }

    fn not_found() -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})
    }

    fn elector() -> (
        LeaderElector,
        tower_test::mock::Handle<Request<Body>, Response<Body>>,
    ) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "ops");
        (
            LeaderElector::new(client, "ops", "ferrocd-operator", "me"),
            handle,
        )
    }

    #[tokio::test]
    async fn missing_lease_is_created_with_us_as_holder() {
        let (elector, mut handle) = elector();
        let server = tokio::spawn(async move {
            let path = format!("{LEASES}/ferrocd-operator");
            answer(
                &mut handle,
                Method::GET,
                &path,
                StatusCode::NOT_FOUND,
                Some(not_found()),
            )
            .await;
            answer(&mut handle, Method::POST, LEASES, StatusCode::CREATED, None).await
        });
        assert!(elector.try_acquire_or_renew().await.unwrap());
        let created = server.await.unwrap();
        assert_eq!(created["spec"]["holderIdentity"], "me");
        assert_eq!(created["spec"]["leaseDurationSeconds"], 15);
        assert_eq!(created["spec"]["leaseTransitions"], 0);
    }

    #[tokio::test]
    async fn losing_the_race_for_an_expired_lease_is_not_leading() {
        let (elector, mut handle) = elector();
        let server = tokio::spawn(async move {
            let path = format!("{LEASES}/ferrocd-operator");
            let expired = json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "ferrocd-operator", "namespace": "ops", "resourceVersion": "7"},
                "spec": {"holderIdentity": "other", "leaseDurationSeconds": 15,
                         "renewTime": "2020-01-01T00:00:00.000000Z", "leaseTransitions": 2},
            });
            answer(
                &mut handle,
                Method::GET,
                &path,
                StatusCode::OK,
                Some(expired),
            )
            .await;
            let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409});
            answer(
                &mut handle,
                Method::PUT,
                &path,
                StatusCode::CONFLICT,
                Some(conflict),
            )
            .await
        });
        assert!(!elector.try_acquire_or_renew().await.unwrap());
        let takeover = server.await.unwrap();
        assert_eq!(
            takeover["metadata"]["resourceVersion"], "7",
            "optimistic concurrency"
        );
        assert_eq!(takeover["spec"]["holderIdentity"], "me");
        assert_eq!(takeover["spec"]["leaseTransitions"], 3);
    }

    fn lease_of(holder: &str) -> Value {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "ferrocd-operator", "namespace": "ops", "resourceVersion": "9"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                     "acquireTime": "2026-01-01T00:00:00.000000Z",
                     "renewTime": "2026-01-01T00:00:10.000000Z", "leaseTransitions": 2},
        })
    }

    #[tokio::test]
    async fn release_clears_the_holder_so_another_candidate_takes_over_at_once() {
        let (elector, mut handle) = elector();
        let server = tokio::spawn(async move {
            let path = format!("{LEASES}/ferrocd-operator");
            answer(
                &mut handle,
                Method::GET,
                &path,
                StatusCode::OK,
                Some(lease_of("me")),
            )
            .await;
            answer(&mut handle, Method::PUT, &path, StatusCode::OK, None).await
        });
        assert!(elector.release().await.unwrap());
        let released = server.await.unwrap();
        assert_eq!(
            released["metadata"]["resourceVersion"], "9",
            "optimistic concurrency"
        );
        assert_eq!(released["spec"]["leaseTransitions"], 2);
        let lease: Lease = serde_json::from_value(released).unwrap();
        let state = LeaseState::of(&lease);
        assert_eq!(state.holder, None);
        assert_eq!(state.duration, Duration::from_secs(1));
        assert_eq!(
            decide(Some(&state), Timestamp::now(), "standby"),
            Decision::Acquire
        );
    }

    #[tokio::test]
    async fn release_leaves_a_lease_held_by_another_alone() {
        let (elector, mut handle) = elector();
        let server = tokio::spawn(async move {
            let path = format!("{LEASES}/ferrocd-operator");
            answer(
                &mut handle,
                Method::GET,
                &path,
                StatusCode::OK,
                Some(lease_of("other")),
            )
            .await;
            handle.next_request().await.is_none()
        });
        assert!(!elector.release().await.unwrap());
        drop(elector);
        assert!(server.await.unwrap(), "no write after the read");
    }

    #[tokio::test]
    async fn leader_releases_the_lease_when_its_work_ends() {
        let (elector, mut handle) = elector();
        let server = tokio::spawn(async move {
            let path = format!("{LEASES}/ferrocd-operator");
            answer(
                &mut handle,
                Method::GET,
                &path,
                StatusCode::NOT_FOUND,
                Some(not_found()),
            )
            .await;
            answer(&mut handle, Method::POST, LEASES, StatusCode::CREATED, None).await;
            answer(
                &mut handle,
                Method::GET,
                &path,
                StatusCode::OK,
                Some(lease_of("me")),
            )
            .await;
            answer(&mut handle, Method::PUT, &path, StatusCode::OK, None).await
        });
        // The controller's run ends like this on SIGTERM.
        let output = elector.run(async { "shut down" }).await.unwrap();
        assert_eq!(output, "shut down");
        let released = server.await.unwrap();
        assert!(released["spec"].get("holderIdentity").is_none());
        assert_eq!(released["spec"]["leaseDurationSeconds"], 1);
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn held_by(holder: &str, renewed: i64) -> LeaseState {
        LeaseState {
            holder: Some(holder.into()),
            renew_time: Some(at(renewed)),
            duration: Duration::from_secs(15),
        }
    }

    #[test]
    fn missing_lease_is_acquired() {
        assert_eq!(decide(None, at(100), "me"), Decision::Acquire);
    }

    #[test]
    fn own_lease_is_renewed_even_when_expired() {
        assert_eq!(
            decide(Some(&held_by("me", 0)), at(100), "me"),
            Decision::Renew
        );
    }

    #[test]
    fn valid_lease_of_another_holder_is_waited_for() {
        assert_eq!(
            decide(Some(&held_by("other", 90)), at(100), "me"),
            Decision::Wait
        );
    }

    #[test]
    fn expired_lease_of_another_holder_is_taken_over() {
        assert_eq!(
            decide(Some(&held_by("other", 85)), at(100), "me"),
            Decision::Acquire
        );
    }

    #[test]
    fn released_lease_is_acquired() {
        let released = LeaseState {
            holder: None,
            ..held_by("other", 99)
        };
        assert_eq!(decide(Some(&released), at(100), "me"), Decision::Acquire);
    }

    #[test]
    fn lease_state_treats_an_empty_holder_as_none() {
        let lease = Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(String::new()),
                lease_duration_seconds: Some(15),
                ..Default::default()
            }),
            ..Default::default()
        };
        let state = LeaseState::of(&lease);
        assert_eq!(state.holder, None);
        assert_eq!(state.duration, Duration::from_secs(15));
    }
}

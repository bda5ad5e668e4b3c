//! Plain HTTP endpoints served on the client port beside gRPC, as etcd
//! serves them: `/health`, `/livez`, `/readyz`, `/version`, `/metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{Encoder, IntGauge, Registry, TextEncoder};
use serde_json::json;

use crate::api::Context;
use crate::config::ETCD_VERSION;

/// Adds the HTTP endpoints to `router`.
pub fn routes(router: Router, ctx: Context) -> Router {
    router.merge(
        metrics_routes(ctx.clone()).merge(
            Router::new()
                .route("/livez", get(livez))
                .route("/readyz", get(readyz))
                .route("/version", get(version))
                .with_state(ctx),
        ),
    )
}

/// `/metrics` and `/health`: what `--listen-metrics-urls` serves.
pub fn metrics_routes(ctx: Context) -> Router {
    let metrics = Metrics::new();
    Router::new()
        .route("/health", get(health))
        .with_state(ctx.clone())
        .route(
            "/metrics",
            get(move || metrics_text(ctx.clone(), metrics.clone())),
        )
}

/// Whether the member can serve a linearizable read within a second (a
/// learner, which serves none: whether it follows a leader).
async fn healthy(ctx: &Context) -> Result<(), String> {
    if ctx.is_learner() {
        return match ctx.leader() {
            Some(_) => Ok(()),
            None => Err("etcdserver: no leader".into()),
        };
    }
    match tokio::time::timeout(Duration::from_secs(1), ctx.linearizable()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.message().to_string()),
        Err(_) => Err("timed out waiting for a linearizable read".into()),
    }
}

async fn health(State(ctx): State<Context>) -> impl IntoResponse {
    match healthy(&ctx).await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"health": "true", "reason": ""})),
        ),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"health": "false", "reason": reason})),
        ),
    }
}

async fn livez() -> impl IntoResponse {
    // The process answers, so it is alive; raft trouble is readiness, not liveness.
    (StatusCode::OK, "ok\n")
}

async fn readyz(State(ctx): State<Context>) -> impl IntoResponse {
    // A learner serves no client request: it is not ready for client
    // traffic (a Kubernetes Service leaves it out) until promoted.
    if ctx.is_learner() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "[-]learner: this member is a learner and serves no client requests\n".to_string(),
        );
    }
    match healthy(&ctx).await {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("[-]linearizable_read failed: {reason}\n"),
        ),
    }
}

async fn version() -> impl IntoResponse {
    Json(json!({
        "etcdserver": ETCD_VERSION,
        "etcdcluster": ETCD_VERSION,
        "storage": ETCD_VERSION,
        "ferrocd": env!("CARGO_PKG_VERSION"),
    }))
}

/// Metrics kept in etcd's names where one exists.
#[derive(Clone)]
struct Metrics {
    registry: Registry,
    has_leader: IntGauge,
    db_size: IntGauge,
    keys: IntGauge,
    revision: IntGauge,
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric name");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let m = Metrics {
            has_leader: gauge(
                "etcd_server_has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not.",
            ),
            db_size: gauge(
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database in bytes.",
            ),
            keys: gauge(
                "etcd_debugging_mvcc_keys_total",
                "Total number of keys with history.",
            ),
            revision: gauge(
                "etcd_debugging_mvcc_current_revision",
                "The current revision of the store.",
            ),
            registry,
        };
        let process = prometheus::process_collector::ProcessCollector::for_self();
        m.registry
            .register(Box::new(process))
            .expect("process metrics");
        m
    }
}

async fn metrics_text(ctx: Context, m: Metrics) -> impl IntoResponse {
    m.has_leader.set(i64::from(
        ctx.raft().metrics().borrow().current_leader.is_some(),
    ));
    m.db_size.set(ctx.db_size());
    m.keys.set(ctx.mvcc().key_count() as i64);
    m.revision.set(ctx.mvcc().current_revision());
    let mut out = Vec::new();
    match TextEncoder::new().encode(&m.registry.gather(), &mut out) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            out,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

//! Plain HTTP endpoints served on the client port beside gRPC, as etcd
//! serves them: `/health`, `/livez`, `/readyz`, `/version`, `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::api::Context;
use crate::config::ETCD_VERSION;
use crate::metrics;
use crate::watch::WatchHub;

/// Adds the HTTP endpoints to `router`.
pub fn routes(router: Router, ctx: Context, hub: Arc<WatchHub>) -> Router {
    router.merge(
        metrics_routes(ctx.clone(), hub).merge(
            Router::new()
                .route("/livez", get(livez))
                .route("/readyz", get(readyz))
                .route("/version", get(version))
                .with_state(ctx),
        ),
    )
}

/// `/metrics` and `/health`: what `--listen-metrics-urls` serves.
pub fn metrics_routes(ctx: Context, hub: Arc<WatchHub>) -> Router {
    Router::new()
        .route("/health", get(health))
        .with_state(ctx.clone())
        .route(
            "/metrics",
            get(move || metrics_text(ctx.clone(), hub.clone())),
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
    let result = healthy(&ctx).await;
    let m = metrics::get();
    match &result {
        Ok(()) => m.health_success.inc(),
        Err(_) => m.health_failures.inc(),
    }
    match result {
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

/// Reads the metrics that are state rather than events, then encodes all.
async fn metrics_text(ctx: Context, hub: Arc<WatchHub>) -> impl IntoResponse {
    let m = metrics::get();
    {
        let raft = ctx.raft().metrics();
        let raft = raft.borrow();
        m.has_leader.set(i64::from(raft.current_leader.is_some()));
        m.is_leader.set(i64::from(
            raft.current_leader == Some(ctx.config().member_id),
        ));
        m.proposals_applied
            .set(raft.last_applied.map_or(0, |l| l.index) as i64);
    }
    m.is_learner.set(i64::from(ctx.is_learner()));
    m.set_member_id(ctx.config().member_id);
    m.quota_backend_bytes.set(ctx.config().quota.limit());
    let db_size = ctx.db_size();
    m.db_total_size.set(db_size);
    m.db_total_size_debugging.set(db_size);
    // sled keeps no separate count of the pages in use: all of it is.
    m.db_total_size_in_use.set(db_size);
    let mvcc = ctx.mvcc();
    m.keys.set(mvcc.key_count() as i64);
    m.current_revision.set(mvcc.current_revision());
    m.compact_revision.set(mvcc.compacted_revision());
    m.watchers.set(hub.watcher_count() as i64);
    match m.encode() {
        Ok(out) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            out,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

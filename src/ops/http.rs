//! The HTTP server: `/metrics`, `/health/live`, `/health/ready` and `GET /journeys/{key}`.

use crate::ops::metrics::Metrics;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The processing thread's sign of life: it beats on every turn of its loops (processing,
/// table load, restore, waiting for Kafka, the restart backoff). `/health/live` fails once no
/// beat came for [`Heartbeat::DEADLINE`], so that an orchestrator restarts a wedged process.
#[derive(Debug)]
pub struct Heartbeat {
    start: Instant,
    /// Milliseconds since `start` at the last beat.
    last: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }
}

impl Heartbeat {
    /// Longer than the longest single wait on Kafka in a loop's turn (a commit's three
    /// 30-second round trips at worst).
    pub const DEADLINE: Duration = Duration::from_secs(180);

    pub fn beat(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last.store(now, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last.load(Ordering::Relaxed)))
    }
}

/// Looks up one journey key: the stored journeys (as JSON) of every partition holding it; the
/// flag asks for this instance's own store only (a lookup forwarded by another instance).
pub type JourneyLookup =
    Arc<dyn Fn(&[u8], bool) -> anyhow::Result<Option<serde_json::Value>> + Send + Sync>;

/// Marks a lookup one instance forwards to another, which answers from its own store only.
pub const FORWARDED_HEADER: &str = "x-attrib-forwarded";

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    pub heartbeat: Arc<Heartbeat>,
    /// `Some` when the journeys API is enabled: (token, lookup).
    pub journeys: Option<(String, JourneyLookup)>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/journeys/{key}", get(journey))
        .with_state(state)
}

async fn metrics(State(s): State<HttpState>) -> Response {
    s.metrics
        .ready
        .set(i64::from(s.ready.load(Ordering::Acquire)));
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

async fn live(State(s): State<HttpState>) -> Response {
    let age = s.heartbeat.age();
    if age < Heartbeat::DEADLINE {
        (StatusCode::OK, "ok").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "processing loop stalled: no progress for {} s",
                age.as_secs()
            ),
        )
            .into_response()
    }
}

async fn ready(State(s): State<HttpState>) -> Response {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: loading tables or restoring state",
        )
            .into_response()
    }
}

/// Compares in time independent of where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= (a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0)) as usize;
    }
    diff == 0
}

async fn journey(
    State(s): State<HttpState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some((token, lookup)) = s.journeys.clone() else {
        return (StatusCode::NOT_FOUND, "the journeys API is disabled").into_response();
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Bearer")],
            "missing or wrong bearer token",
        )
            .into_response();
    }
    let local_only = headers.contains_key(FORWARDED_HEADER);
    match tokio::task::spawn_blocking(move || lookup(key.as_bytes(), local_only)).await {
        Ok(Ok(Some(v))) => axum::Json(v).into_response(),
        Ok(Ok(None)) => (StatusCode::NOT_FOUND, "no journey with this key").into_response(),
        Ok(Err(e)) => (StatusCode::BAD_GATEWAY, format!("{e:#}")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    addr: std::net::SocketAddr,
    state: HttpState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_on(bind(addr).await?, state, shutdown).await
}

/// Binds the HTTP address (an address in use is an error the caller can stop on).
pub async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (`http_addr`): {e}"))
}

/// Serves on a bound listener until `shutdown`.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}

//! Liveness and readiness, for load balancers and orchestrators.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::Api;
use crate::statements;

/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "{status: ok}", body = Object)))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The database answers and has the extension at the version this worker
/// is (a database waiting for `ALTER EXTENSION smsbus UPDATE` is not
/// ready).
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready", body = Object),
              (status = 503, description = "Not ready, and why", body = Object)))]
pub async fn readyz(State(api): State<Api>) -> (StatusCode, Json<Value>) {
    let own = env!("CARGO_PKG_VERSION");
    let installed = async {
        let client = api.pool.get().await.map_err(|e| e.to_string())?;
        let row = statements::query_opt(
            &client,
            "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'smsbus'",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok::<_, String>(row.map(|r| r.get::<_, String>(0)))
    }
    .await;
    match installed {
        Ok(Some(version)) if version == own => (
            StatusCode::OK,
            Json(json!({"status": "ready", "extension": version})),
        ),
        Ok(found) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({"status": "not ready", "extension": found, "worker": own,
                        "reason": "the extension's version is not this worker's"}),
            ),
        ),
        Err(e) => {
            tracing::warn!("http api: readyz: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "not ready", "reason": "the database does not answer"})),
            )
        }
    }
}

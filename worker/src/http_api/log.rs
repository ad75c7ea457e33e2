//! One log line per request: method, path, status, milliseconds and the
//! key's id (never the key, nor the query or body).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

/// Where the key check leaves the id of the key it found.
#[derive(Clone, Default)]
pub struct KeySlot(Arc<AtomicI64>);

impl KeySlot {
    pub fn set(&self, id: i64) {
        self.0.store(id, Ordering::Relaxed);
    }

    fn get(&self) -> Option<i64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|&id| id != 0)
    }
}

pub async fn requests(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let slot = KeySlot::default();
    request.extensions_mut().insert(slot.clone());
    let response = next.run(request).await;
    tracing::info!(
        %method,
        path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        key = slot.get(),
        "http api: request"
    );
    response
}

//! Identical blocking queries share one execution.
//!
//! Thousands of watchers often block on the very same query (`GET
//! /v1/health/service/web?index=42`). When one is already in flight, a new
//! identical request (same method, path, query and token) waits for that
//! execution and answers with a copy of its response, instead of reading
//! and rendering the same answer again: a write that wakes 2,000 watchers
//! then costs one read and one rendering, not 2,000.
//!
//! It sits behind the authorization point, so every request is still
//! authorized on its own; only requests carrying `index=` are coalesced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::future::{BoxFuture, FutureExt, Shared};

type Answer = (StatusCode, HeaderMap, Bytes);

/// Blocking queries in flight, by request identity.
#[derive(Clone, Default)]
pub struct InFlight(Arc<Mutex<HashMap<String, Shared<BoxFuture<'static, Answer>>>>>);

pub async fn coalesce(State(in_flight): State<InFlight>, request: Request, next: Next) -> Response {
    let blocking = request.method() == Method::GET
        && request.uri().query().is_some_and(|q| q.split('&').any(|p| p.starts_with("index=")));
    if !blocking {
        return next.run(request).await;
    }
    let token = ["x-consul-token", "authorization"]
        .iter()
        .filter_map(|name| request.headers().get(*name).and_then(|v| v.to_str().ok()))
        .collect::<Vec<_>>()
        .join(" ");
    let key = format!("{} {}", request.uri(), token);
    let execution = {
        let mut map = in_flight.0.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&key) {
            Some(execution) => execution.clone(),
            None => {
                let execution = run(request, next).boxed().shared();
                map.insert(key.clone(), execution.clone());
                execution
            }
        }
    };
    let (status, headers, body) = execution.clone().await;
    {
        // The first to finish retires it; later identical requests start anew.
        let mut map = in_flight.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&key).is_some_and(|current| current.ptr_eq(&execution)) {
            map.remove(&key);
        }
    }
    (status, headers, Body::from(body)).into_response()
}

async fn run(request: Request, next: Next) -> Answer {
    let (parts, body) = next.run(request).await.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    (parts.status, parts.headers, body)
}

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
//! An execution leaves the table when its first waiter is answered, or when
//! its last waiter goes away (all clients disconnected), so nothing stays
//! behind.

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
pub struct InFlight(Arc<Mutex<HashMap<String, Execution>>>);

/// One shared execution and how many requests wait on it. It leaves the map
/// when the first waiter gets its answer, or when the last one goes away
/// (every client disconnected), which also drops, and so cancels, it.
struct Execution {
    shared: Shared<BoxFuture<'static, Answer>>,
    waiters: usize,
}

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
    let (status, headers, body) = in_flight.join(key, || run(request, next).boxed()).await;
    (status, headers, Body::from(body)).into_response()
}

impl InFlight {
    /// Waits on the execution in flight under `key`, or on a new one made by
    /// `start`, and answers with a copy of its answer.
    async fn join(&self, key: String, start: impl FnOnce() -> BoxFuture<'static, Answer>) -> Answer {
        let shared = {
            let mut map = self.map();
            let execution =
                map.entry(key.clone()).or_insert_with(|| Execution { shared: start().shared(), waiters: 0 });
            execution.waiters += 1;
            execution.shared.clone()
        };
        let waiter = Waiter { in_flight: self, key, shared: shared.clone() };
        let answer = shared.await;
        // The first to finish retires it; later identical requests start anew.
        waiter.retire();
        answer
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Execution>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One request waiting on an execution; counted out when it goes, done or not.
struct Waiter<'a> {
    in_flight: &'a InFlight,
    key: String,
    shared: Shared<BoxFuture<'static, Answer>>,
}

impl Waiter<'_> {
    fn retire(&self) {
        let mut map = self.in_flight.map();
        if map.get(&self.key).is_some_and(|e| e.shared.ptr_eq(&self.shared)) {
            map.remove(&self.key);
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut map = self.in_flight.map();
        let Some(execution) = map.get_mut(&self.key).filter(|e| e.shared.ptr_eq(&self.shared)) else { return };
        execution.waiters -= 1;
        if execution.waiters == 0 {
            map.remove(&self.key);
        }
    }
}

async fn run(request: Request, next: Next) -> Answer {
    let (parts, body) = next.run(request).await.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    (parts.status, parts.headers, body)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    fn answer(text: &'static str) -> Answer {
        (StatusCode::OK, HeaderMap::new(), Bytes::from_static(text.as_bytes()))
    }

    /// Sets its flag when dropped (the execution it lives in was cancelled).
    struct SetOnDrop(Arc<AtomicBool>);

    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn identical_requests_share_one_execution_and_retire_it() {
        let in_flight = InFlight::default();
        let started = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let start = || {
            started.fetch_add(1, Ordering::SeqCst);
            let gate = gate.clone();
            async move {
                gate.notified().await;
                answer("one")
            }
            .boxed()
        };
        let open_gate = async {
            tokio::task::yield_now().await;
            gate.notify_one();
        };
        let (a, b, ()) =
            futures::join!(in_flight.join("k".into(), start), in_flight.join("k".into(), start), open_gate);
        assert_eq!((a.2, b.2), (Bytes::from_static(b"one"), Bytes::from_static(b"one")));
        assert_eq!(started.load(Ordering::SeqCst), 1);
        assert!(in_flight.map().is_empty());
    }

    #[tokio::test]
    async fn an_execution_every_client_left_is_dropped_and_forgotten() {
        let in_flight = InFlight::default();
        let cancelled = Arc::new(AtomicBool::new(false));
        let flag = cancelled.clone();
        let never = move || {
            async move {
                let _cancelled = SetOnDrop(flag);
                futures::future::pending::<Answer>().await
            }
            .boxed()
        };
        let first = in_flight.join("k".into(), never);
        let second = in_flight.join("k".into(), || unreachable!("joins the execution in flight"));
        // Both start waiting (one poll), then both clients go away.
        assert!(futures::future::join(first, second).now_or_never().is_none());
        assert!(in_flight.map().is_empty(), "no entry is left behind");
        assert!(cancelled.load(Ordering::SeqCst), "the shared execution is dropped with its last waiter");
    }
}

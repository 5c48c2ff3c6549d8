//! The sidecar's admin port (loopback only, like Envoy's): `/metrics` in
//! Prometheus' text format, `/config` (what the sidecar runs on now:
//! listeners, endpoints, intentions, certificate serial and expiry; never
//! the private key) and `/ready`.

use std::future::Future;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::accept::accept_until;

use crate::http::Body;
use crate::runtime::{current, RuntimeWatch};

/// What the admin port shows.
pub struct Admin {
    pub registry: Registry,
    pub runtime: RuntimeWatch,
}

/// Serves the admin port until `shutdown` resolves.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: impl Future<Output = ()>) {
    accept_until(&listener, "admin", shutdown, move |stream, _| {
        let admin = admin.clone();
        async move {
            let service = service_fn(|request: Request<Incoming>| {
                let admin = admin.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&request, &admin)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    })
    .await
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    response
}

fn route(request: &Request<Incoming>, admin: &Admin) -> Response<Body> {
    match request.uri().path() {
        "/metrics" => {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, &admin.registry) {
                Ok(()) => respond(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", text),
                Err(error) => respond(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", error.to_string()),
            }
        }
        "/config" => match config_dump(&admin.runtime) {
            Some(config) => respond(StatusCode::OK, "application/json", format!("{config:#}\n")),
            None => respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "no configuration yet\n".into()),
        },
        "/ready" => match current(&admin.runtime) {
            Some(_) => respond(StatusCode::OK, "text/plain", "ready\n".into()),
            None => respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "waiting for a configuration\n".into()),
        },
        _ => {
            respond(StatusCode::NOT_FOUND, "text/plain", "the admin port serves /metrics, /config and /ready\n".into())
        }
    }
}

/// The current snapshot without its private key, and root certificates
/// shown by count.
pub fn config_dump(runtime: &RuntimeWatch) -> Option<Value> {
    let runtime = current(runtime)?;
    let mut config = serde_json::to_value(&runtime.snapshot).ok()?;
    if let Some(tls) = config.get_mut("tls").and_then(Value::as_object_mut) {
        tls.remove("private_key_pem");
        tls.remove("cert_chain_pem");
        let roots = runtime.snapshot.tls.roots_pem.len();
        tls.insert("roots_pem".into(), json!(format!("{roots} root(s)")));
        let valid_before = runtime.snapshot.tls.leaf_valid_before;
        tls.insert("leaf_valid_before".into(), json!(weft_api::timestamp::rfc3339(valid_before)));
    }
    Some(config)
}

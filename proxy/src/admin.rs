//! The sidecar's admin port (loopback only, like Envoy's): `/metrics` in
//! Prometheus' text format, `/config` (what the sidecar runs on now:
//! listeners, endpoints, intentions, certificate serial and expiry; never
//! the private key) and `/ready`.
//!
//! `/ready` answers 200 with a [`ProxyReady`] (the proxy's ID and its bound
//! public listener) only once the proxy serves: its agent's listening check
//! reads it to know that the port it checks is this sidecar's, not just any
//! listener's.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use weft_api::proxy::ProxyReady;

use crate::accept::accept_until;

use crate::http::Body;
use crate::runtime::{current, RuntimeWatch};

/// What the admin port shows.
pub struct Admin {
    pub registry: Registry,
    pub runtime: RuntimeWatch,
    /// Set once a sidecar's public listener is bound (gateways have none).
    pub public_listener: Arc<OnceLock<SocketAddr>>,
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
        "/ready" => ready(admin),
        _ => {
            respond(StatusCode::NOT_FOUND, "text/plain", "the admin port serves /metrics, /config and /ready\n".into())
        }
    }
}

/// `/ready`: 200 with who this proxy is and where it listens, once it
/// serves; 503 with what it waits for until then.
fn ready(admin: &Admin) -> Response<Body> {
    let unavailable = |why: &str| respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("{why}\n"));
    let Some(runtime) = current(&admin.runtime) else { return unavailable("waiting for a configuration") };
    let snapshot = &runtime.snapshot;
    let gateway = snapshot.ingress.is_some() || snapshot.mesh_gateway.is_some();
    let public_listener = admin.public_listener.get().copied();
    if !gateway && public_listener.is_none() {
        return unavailable(&format!("not listening on {} yet", snapshot.public_listener));
    }
    let ready = ProxyReady { proxy_id: snapshot.proxy_id.clone(), public_listener };
    respond(StatusCode::OK, "application/json", serde_json::to_string(&ready).unwrap_or_default())
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

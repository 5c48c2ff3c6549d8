//! `/v1/connect/ca/*` and `/v1/agent/connect/ca/*`: the mesh CA's roots
//! (public certificates only: a root's private key is never served), its
//! configuration, and leaf certificates for this agent's services.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use weft_api::ids::{RaftIndex, ServiceId, ServiceName};
use weft_api::mesh::CaState;
use weft_server::ca::CaError;
use weft_server::store::{Table, Tables};

use weft_acl::Permission;
use weft_api::acl::{Access, GlobalResource, NamedResource};

use super::agent::content_hash;
use super::authz::Acl;
use super::error::ApiError;
use super::query::{meta_headers, QueryParams, ReadOptions};
use super::read::blocking_json;
use super::AppState;
use crate::connect::snapshot::{self, Locality, SidecarSpec, SnapshotError, SNAPSHOT_TABLES};
use crate::connect::unix_now;
use crate::decode::decode_body;
use crate::local::definition::{ProxyConfig, Upstream};

/// How long a leaf request waits for this agent's registration to reach the
/// catalog (anti-entropy runs at once, but asynchronously).
const REGISTRATION_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

fn rfc3339(unix: i64) -> String {
    weft_api::timestamp::rfc3339(unix).unwrap_or_default()
}

/// Consul's `IndexedCARoots`.
fn roots_json(ca: Option<&CaState>) -> Value {
    let Some(ca) = ca else {
        return json!({"ActiveRootID": "", "TrustDomain": "", "Roots": []});
    };
    let roots: Vec<Value> = ca
        .roots
        .iter()
        .map(|root| {
            json!({
                "ID": root.id,
                "Name": root.name,
                "SerialNumber": root.serial_number,
                "SigningKeyID": root.id,
                "ExternalTrustDomain": ca.cluster_id,
                "NotBefore": rfc3339(root.not_before),
                "NotAfter": rfc3339(root.not_after),
                "RootCert": root.certificate_pem(),
                "IntermediateCerts": root.cross_signed_pems(),
                "Active": root.active,
                "PrivateKeyType": "ec",
                "PrivateKeyBits": 256,
                "CreateIndex": ca.indexes.create.get(),
                "ModifyIndex": ca.indexes.modify.get(),
            })
        })
        .collect();
    json!({
        "ActiveRootID": ca.active_root().map(|r| r.id.clone()).unwrap_or_default(),
        "TrustDomain": ca.trust_domain,
        "Roots": roots,
    })
}

/// `GET /v1/connect/ca/roots` and `/v1/agent/connect/ca/roots` (blocking).
/// `service:write` on `name`.
fn service_write(name: &str) -> Permission {
    Permission::Named(NamedResource::Service, name.to_owned(), Access::Write)
}

pub async fn roots(State(state): State<AppState>, acl: Acl, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    // The roots are public: anyone may verify the mesh's certificates.
    acl.public();
    let read = |tables: &Tables, _: &QueryParams| tables.mesh().ca().cloned();
    blocking_json(&state, raw.as_deref(), &[Table::Ca], read, |ca| roots_json(ca.as_ref())).await
}

/// `GET /v1/connect/ca/configuration`.
pub async fn configuration(
    State(state): State<AppState>,
    acl: Acl,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    acl.require(Permission::Global(GlobalResource::Operator, Access::Read))?;
    let leaf_ttl = state.config.leaf_cert_ttl;
    let read = |tables: &Tables, _: &QueryParams| tables.mesh().ca().cloned();
    let render = |ca: Option<CaState>| {
        json!({
            "Provider": "consul",
            "ClusterID": ca.as_ref().map(|c| c.cluster_id.clone()).unwrap_or_default(),
            "Config": {
                "LeafCertTTL": weft_api::duration::format(leaf_ttl),
                "PrivateKeyType": "ec",
                "PrivateKeyBits": 256,
            },
            "State": Value::Null,
            "ForceWithoutCrossSigning": false,
            "CreateIndex": ca.as_ref().map(|c| c.indexes.create.get()).unwrap_or_default(),
            "ModifyIndex": ca.as_ref().map(|c| c.indexes.modify.get()).unwrap_or_default(),
        })
    };
    blocking_json(&state, raw.as_deref(), &[Table::Ca], read, render).await
}

/// `PUT /v1/connect/ca/configuration`: makes a new root, cross-signed by
/// the active one, and makes it active (a rotation: see `weft_server::ca`).
/// Weft's only provider is its built-in one (`consul`, as Consul calls its
/// own), with EC P-256 keys; the leaf TTL is the servers' setting
/// (`connect { ca_config { leaf_cert_ttl } }`).
pub async fn set_configuration(State(state): State<AppState>, acl: Acl, body: Bytes) -> Result<Response, ApiError> {
    acl.require(Permission::Global(GlobalResource::Operator, Access::Write))?;
    let leaf_ttl = weft_api::duration::format(state.config.leaf_cert_ttl);
    let body: ConfigurationBody = decode_body(&body)?;
    if let Some(provider) = body.provider.filter(|p| !p.is_empty() && p != "consul") {
        return Err(ApiError::BadRequest(format!(
            "Provider {provider:?} is not supported: Weft's CA is built in (Provider \"consul\", as Consul names its own)"
        )));
    }
    for (key, value) in body.config.unwrap_or_default() {
        let accepted = match crate::decode::normalize_key(&key).as_str() {
            "privatekeytype" => value == "ec",
            "privatekeybits" => value == 256,
            "leafcertttl" => value.as_str() == Some(leaf_ttl.as_str()),
            _ => false,
        };
        if !accepted {
            return Err(ApiError::BadRequest(format!(
                "Config.{key} = {value} cannot be changed here: Weft's CA uses EC P-256 keys, and leaves are valid \
                 for {leaf_ttl} (set connect {{ ca_config {{ leaf_cert_ttl }} }} in the servers' config files)"
            )));
        }
    }
    let root_id = state.backend.rotate_ca().await?;
    Ok(Json(json!({"ActiveRootID": root_id})).into_response())
}

#[derive(serde::Deserialize)]
struct ConfigurationBody {
    #[serde(rename = "provider")]
    provider: Option<String>,
    #[serde(rename = "config")]
    config: Option<serde_json::Map<String, Value>>,
}

/// `GET /v1/agent/connect/ca/leaf/<service>`: a leaf for a service
/// registered on this agent, with the private key made here.
/// With `?index=<its X-Consul-Index>` it blocks (up to `?wait`) until the
/// CA changes (a rotation) or the leaf is due for renewal, like Consul's.
pub async fn leaf(
    State(state): State<AppState>,
    acl: Acl,
    Path(service): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    // A leaf is the service's identity in the mesh: only for who may write it.
    acl.require(service_write(&service))?;
    let service = ServiceName::new(service);
    let options = ReadOptions::from_query(&QueryParams::parse(raw.as_deref()), &state.backend)?;
    if options.min_index.get() > 0 {
        let renew_at = state.leaves.renew_at(&service).await.unwrap_or(i64::MAX);
        let until_renewal = std::time::Duration::from_secs(u64::try_from(renew_at - unix_now()).unwrap_or(0));
        let wait = options.wait.min(until_renewal);
        let store = state.backend.store();
        store.blocking_read(&[Table::Ca], options.min_index, wait, |t| ((), t.index(Table::Ca))).await;
    }
    let (active_root, index) = {
        let tables = state.backend.store().read();
        let ca = tables.mesh().ca();
        (ca.and_then(|c| c.active_root()).map(|r| r.id.clone()), tables.index(Table::Ca))
    };
    let active_root = active_root.ok_or_else(|| ApiError::from(CaError::NotInitialized))?;
    let registered_here = state.local.services().iter().any(|s| s.name == service);
    let deadline = tokio::time::Instant::now() + REGISTRATION_PATIENCE;
    let leaf = loop {
        match state.leaves.leaf(&service, &active_root).await {
            Err(CaError::NotRegistered(_)) if registered_here && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            other => break other?,
        }
    };
    let body = json!({
        "SerialNumber": leaf.signed.serial_number,
        "CertPEM": leaf.signed.cert_pem,
        "PrivateKeyPEM": leaf.private_key_pem,
        "Service": leaf.service,
        "ServiceURI": leaf.signed.spiffe_id,
        "ValidAfter": rfc3339(leaf.signed.valid_after),
        "ValidBefore": rfc3339(leaf.signed.valid_before),
        "CreateIndex": index.get(),
        "ModifyIndex": index.get(),
    });
    Ok((meta_headers(&state.backend, index), Json(body)).into_response())
}

/// Longest `?wait` of a proxy snapshot query.
const MAX_SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// `GET /v1/agent/connect/proxy/<sidecar-id>`: the snapshot a sidecar
/// registered on this agent runs on (Weft's shape,
/// [`weft_api::proxy::ProxySnapshot`]). With `?hash=<X-Consul-ContentHash
/// of the last answer>` it blocks until the snapshot differs (or `?wait`,
/// 5 minutes by default), waking on the tables it reads, this agent's
/// registrations, and the leaf's renewal.
pub async fn proxy_snapshot(
    State(state): State<AppState>,
    acl: Acl,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let id = ServiceId::new(id);
    // The snapshot holds the service's leaf and key.
    let name = state.local.service(&id).map(|s| s.name.to_string()).unwrap_or_else(|| id.to_string());
    acl.require(service_write(&name))?;
    let local = state.local.clone();
    snapshot_answer(&state, raw.as_deref(), move || SidecarSpec::registered(&local, &id).map_err(snapshot_error)).await
}

/// `GET /v1/agent/connect/proxy?service=web&listen=ADDR&service-addr=ADDR&upstream=api:9191`:
/// the same for a stand-alone sidecar (`weft connect proxy --service`),
/// which has no registration of its own. `service` must be registered on
/// this agent: the CA signs leaves only for those.
pub async fn standalone_proxy_snapshot(
    State(state): State<AppState>,
    acl: Acl,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = QueryParams::parse(raw.as_deref());
    acl.require(service_write(query.get("service").unwrap_or_default()))?;
    let spec = standalone_spec(&query)?;
    snapshot_answer(&state, raw.as_deref(), move || Ok(spec.clone())).await
}

/// `GET /v1/agent/connect/gateway/<gateway-id>?address=IP`: the snapshot
/// a gateway registered on this agent runs on. An ingress gateway gets its
/// listeners (from its ingress-gateway entry) on `address`, and each
/// exposed service's chain and endpoints; a mesh gateway its registered
/// addresses and the sidecars of its network. Blocks on `?hash` like the
/// sidecar snapshots.
pub async fn gateway_snapshot(
    State(state): State<AppState>,
    acl: Acl,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let gateway = state.local.service(&ServiceId::new(id.clone())).map(|s| s.name.to_string()).unwrap_or(id.clone());
    acl.require(service_write(&gateway))?;
    let query = QueryParams::parse(raw.as_deref());
    let address = match query.get("address").filter(|a| !a.is_empty()) {
        None => std::net::IpAddr::from([127, 0, 0, 1]),
        Some(text) => text
            .parse()
            .map_err(|_| ApiError::BadRequest(format!("?address={text}: give the IP the listeners bind")))?,
    };
    let (id, local) = (ServiceId::new(id), state.local.clone());
    snapshot_answer(&state, raw.as_deref(), move || SidecarSpec::gateway(&local, &id, address).map_err(snapshot_error))
        .await
}

fn standalone_spec(query: &QueryParams) -> Result<SidecarSpec, ApiError> {
    let required = |name: &str| {
        query.get(name).filter(|v| !v.is_empty()).ok_or_else(|| ApiError::BadRequest(format!("?{name} is required")))
    };
    let address = |name: &str| -> Result<std::net::SocketAddr, ApiError> {
        let value = required(name)?;
        value.parse().map_err(|_| ApiError::BadRequest(format!("?{name}={value}: give an IP address and a port")))
    };
    let service = ServiceName::new(required("service")?);
    let listen = address("listen")?;
    let app = address("service-addr")?;
    let upstreams = query
        .all("upstream")
        .map(|upstream| {
            let bad = || ApiError::BadRequest(format!("?upstream={upstream}: give NAME:PORT or NAME:ADDRESS:PORT"));
            let (name, bind) = upstream.split_once(':').ok_or_else(bad)?;
            let (address, port) = bind.rsplit_once(':').map(|(a, p)| (Some(a.to_owned()), p)).unwrap_or((None, bind));
            Ok(Upstream {
                destination_name: name.to_owned(),
                local_bind_port: port.parse().map_err(|_| bad())?,
                local_bind_address: address,
                destination_type: None,
                datacenter: None,
                config: None,
                other: Default::default(),
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(SidecarSpec {
        proxy_id: ServiceId::new(format!("{service}-standalone-proxy")),
        public_listener: listen,
        proxy: ProxyConfig {
            destination_service_id: ServiceId::new(service.as_str()),
            destination_service_name: service,
            local_service_address: app.ip().to_string(),
            local_service_port: app.port(),
            upstreams,
            transparent: false,
        },
        gateway: None,
    })
}

fn snapshot_error(error: SnapshotError) -> ApiError {
    match error {
        SnapshotError::NotASidecar(_) | SnapshotError::NotAGateway(_) => ApiError::NotFound(error.to_string()),
        SnapshotError::Ca(ca) => ApiError::from(ca),
        // The registration cannot be served as it is: its text says why
        // (it is not the cluster failing).
        SnapshotError::BadRegistration { .. } => ApiError::Internal(error.to_string()),
    }
}

/// The one shape of a snapshot answer: wait for the local state, build,
/// and block on `?hash` (see [`proxy_snapshot`]).
async fn snapshot_answer(
    state: &AppState,
    raw: Option<&str>,
    spec_of: impl Fn() -> Result<SidecarSpec, ApiError>,
) -> Result<Response, ApiError> {
    let query = QueryParams::parse(raw);
    let wait = query
        .get("wait")
        .map(weft_api::duration::parse)
        .transpose()
        .map_err(|e| ApiError::BadRequest(format!("Invalid wait: {e}")))?
        .unwrap_or(std::time::Duration::from_secs(300))
        .min(MAX_SNAPSHOT_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let wanted = query.get("hash").filter(|h| !h.is_empty()).map(str::to_owned);
    let store = state.backend.store().clone();
    // A client agent that has just started holds no state yet: a snapshot
    // from an empty copy would deny every caller and trust no root.
    if !store.wait_applied(RaftIndex(1), wait).await {
        return Err(ApiError::Unavailable("this agent has no copy of the cluster state yet; retry".into()));
    }
    let mut changes = state.local.watch();
    loop {
        changes.borrow_and_update();
        let seen = store.read().max_index(SNAPSHOT_TABLES);
        let spec = spec_of()?;
        let built = snapshot::build(&store, &state.leaves, &state.admin_ports, &Locality::of(&state.config), &spec)
            .await
            .map_err(snapshot_error)?;
        let body = serde_json::to_value(&built.snapshot)
            .map_err(|e| ApiError::Cluster(weft_server::ServerError::Fatal(e.to_string())))?;
        let hash = content_hash(&body);
        let now = tokio::time::Instant::now();
        if wanted.as_deref() != Some(hash.as_str()) || now >= deadline {
            let mut headers = axum::http::HeaderMap::new();
            if let Ok(value) = axum::http::HeaderValue::from_str(&hash) {
                headers.insert("X-Consul-ContentHash", value);
            }
            return Ok((headers, Json(body)).into_response());
        }
        let renewal = std::time::Duration::from_secs(u64::try_from(built.renew_at - unix_now()).unwrap_or(0));
        let until = deadline.min(now + renewal);
        tokio::select! {
            _ = store.blocking_read(SNAPSHOT_TABLES, seen, until - now, |t| ((), t.max_index(SNAPSHOT_TABLES))) => {}
            _ = changes.changed() => {}
        }
    }
}

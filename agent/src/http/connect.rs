//! `/v1/connect/ca/*` and `/v1/agent/connect/ca/*`: the mesh CA's roots
//! (public certificates only: a root's private key is never served), its
//! configuration, and leaf certificates for this agent's services.

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use weft_api::ids::ServiceName;
use weft_api::mesh::CaState;
use weft_server::ca::{CaError, DEFAULT_LEAF_TTL};
use weft_server::store::{Table, Tables};

use super::error::ApiError;
use super::query::{meta_headers, QueryParams};
use super::read::blocking_json;
use super::AppState;

/// How long a leaf request waits for this agent's registration to reach the
/// catalog (anti-entropy runs at once, but asynchronously).
const REGISTRATION_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix).ok().and_then(|t| t.format(&Rfc3339).ok()).unwrap_or_default()
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
                "RootCert": root.cert_pem,
                "IntermediateCerts": [],
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
pub async fn roots(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let read = |tables: &Tables, _: &QueryParams| tables.mesh().ca().cloned();
    blocking_json(&state, raw.as_deref(), &[Table::Ca], read, |ca| roots_json(ca.as_ref())).await
}

/// `GET /v1/connect/ca/configuration`.
pub async fn configuration(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let read = |tables: &Tables, _: &QueryParams| tables.mesh().ca().cloned();
    let render = |ca: Option<CaState>| {
        json!({
            "Provider": "consul",
            "ClusterID": ca.as_ref().map(|c| c.cluster_id.clone()).unwrap_or_default(),
            "Config": {
                "LeafCertTTL": weft_api::duration::format(DEFAULT_LEAF_TTL),
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

/// `GET /v1/agent/connect/ca/leaf/<service>`: a leaf for a service
/// registered on this agent, with the private key made here.
pub async fn leaf(State(state): State<AppState>, Path(service): Path<String>) -> Result<Response, ApiError> {
    let service = ServiceName::new(service);
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

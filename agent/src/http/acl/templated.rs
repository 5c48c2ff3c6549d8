//! `/v1/acl/templated-policies`, `/v1/acl/templated-policy/name/<name>` and
//! `/v1/acl/templated-policy/preview/<name>`: Consul's built-in templated
//! policies ([`weft_acl::templates`]), listed, read, and rendered into the
//! synthetic policy a name gives. All need `acl:read`, as Consul's do.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use weft_acl::templates::{self, Template, TemplateError};
use weft_api::acl::AclPolicy;

use super::{enabled, policy_json, read_acl};
use crate::decode::decode_body;
use crate::http::authz::Acl;
use crate::http::error::ApiError;
use crate::http::AppState;

fn template_json(template: &Template) -> Value {
    json!({
        "TemplateName": template.name,
        "Schema": template.schema,
        "Template": template.template,
        "Description": template.description,
    })
}

fn found(name: &str) -> Result<&'static Template, ApiError> {
    templates::find(name).map_err(|e| ApiError::NotFound(e.to_string()))
}

/// `GET /v1/acl/templated-policies`: every template, by name.
pub async fn list(State(state): State<AppState>, acl: Acl) -> Result<Response, ApiError> {
    enabled(&state, &acl)?;
    read_acl(&acl)?;
    let all: Map<String, Value> = templates::TEMPLATES.iter().map(|t| (t.name.to_owned(), template_json(t))).collect();
    Ok(Json(all).into_response())
}

/// `GET /v1/acl/templated-policy/name/<name>` (names hold a `/`).
pub async fn read(State(state): State<AppState>, acl: Acl, Path(name): Path<String>) -> Result<Response, ApiError> {
    enabled(&state, &acl)?;
    read_acl(&acl)?;
    Ok(Json(template_json(found(&name)?)).into_response())
}

/// The template's variables (`{"Name": "api"}`, any case).
#[derive(Default, Deserialize)]
#[serde(default)]
struct Variables {
    #[serde(rename = "name")]
    name: String,
}

/// `POST /v1/acl/templated-policy/preview/<name>`: the policy the template
/// renders to with the body's variables, named `synthetic-policy-<hash>`
/// as Consul names it; nothing is written.
pub async fn preview(
    State(state): State<AppState>,
    acl: Acl,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    enabled(&state, &acl)?;
    read_acl(&acl)?;
    let template = found(&name)?;
    let variables: Variables =
        if body.iter().all(u8::is_ascii_whitespace) { Variables::default() } else { decode_body(&body)? };
    let (text, rules) = template.render(&variables.name).map_err(|e| match e {
        TemplateError::Unknown(_) => ApiError::NotFound(e.to_string()),
        _ => ApiError::BadRequest(e.to_string()),
    })?;
    let id = weft_server::join::secret_hash(&text)[..32].to_owned();
    let policy = AclPolicy {
        name: format!("synthetic-policy-{id}"),
        id,
        description: format!("synthetic policy generated from templated policy: {}", template.name),
        rules_text: text,
        rules,
        datacenters: Vec::new(),
        indexes: Default::default(),
    };
    Ok(Json(policy_json(&policy)).into_response())
}

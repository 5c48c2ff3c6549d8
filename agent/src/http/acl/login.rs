//! `/v1/acl/auth-method*`, `/v1/acl/binding-rule*`, `/v1/acl/login` and
//! `/v1/acl/logout`: Consul's workload login. A method's `Config` and a
//! rule's selector and bind name are checked here (`weft_acl::login`),
//! before anything is written; logging in and out is the servers' (see
//! `weft_server::login`), because only they may make a token for a caller
//! that has none.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use weft_acl::login::{check_binding_rule, jwt_config_json, parse_jwt_config};
use weft_api::acl::{AclAuthMethod, AclBindingRule, AuthMethodType, BindType};
use weft_api::command::Command;
use weft_server::login::LoginParams;

use super::{delete, enabled, new_id, read_tables, token_json, write, write_acl};
use crate::decode::decode_body;
use crate::http::authz::Acl;
use crate::http::error::ApiError;
use crate::http::query::QueryParams;
use crate::http::AppState;

/// The bounds Consul puts on `MaxTokenTTL` (its token TTL limits).
const MIN_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(60);
const MAX_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn bad(reason: impl Into<String>) -> ApiError {
    ApiError::BadRequest(reason.into())
}

// ------------------------------------------------------- auth methods ---

#[derive(Default, Deserialize)]
#[serde(default)]
struct MethodBody {
    #[serde(rename = "name")]
    name: String,
    #[serde(rename = "type")]
    method_type: String,
    #[serde(rename = "displayname")]
    display_name: String,
    #[serde(rename = "description")]
    description: String,
    #[serde(rename = "maxtokenttl")]
    max_token_ttl: Value,
    #[serde(rename = "tokenlocality")]
    token_locality: String,
    #[serde(rename = "config")]
    config: Value,
}

/// The method as Consul shows it; `with_config` false for a list's stubs.
fn method_json(method: &AclAuthMethod, with_config: bool) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("Name".into(), json!(method.name));
    out.insert("Type".into(), json!(method.method_type.as_str()));
    if !method.display_name.is_empty() {
        out.insert("DisplayName".into(), json!(method.display_name));
    }
    if !method.description.is_empty() {
        out.insert("Description".into(), json!(method.description));
    }
    if method.max_token_ttl_ms > 0 {
        let ttl = std::time::Duration::from_millis(method.max_token_ttl_ms);
        out.insert("MaxTokenTTL".into(), json!(weft_api::duration::format(ttl)));
    }
    if method.token_locality_global {
        out.insert("TokenLocality".into(), json!("global"));
    }
    if with_config {
        out.insert("Config".into(), jwt_config_json(&method.config));
    }
    out.insert("CreateIndex".into(), json!(method.indexes.create.get()));
    out.insert("ModifyIndex".into(), json!(method.indexes.modify.get()));
    Value::Object(out)
}

/// Checks a method's body as Consul does, in Consul's order and words.
fn method_from(body: MethodBody, existing: Option<&AclAuthMethod>) -> Result<AclAuthMethod, ApiError> {
    if body.name.is_empty() {
        return Err(bad("Invalid Auth Method: no Name is set"));
    }
    if body.name.len() > 128 || !body.name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_') {
        return Err(bad("Invalid Auth Method: invalid Name. Only alphanumeric characters, '-' and '_' are allowed"));
    }
    let method_type = match (body.method_type.as_str(), existing) {
        ("", Some(existing)) => existing.method_type,
        (name, existing) => {
            let parsed = AuthMethodType::parse(name).ok_or_else(|| {
                let known: Vec<&str> = AuthMethodType::ALL.iter().map(|t| t.as_str()).collect();
                bad(format!("Invalid Auth Method: Type should be one of: [{}]", known.join(" ")))
            })?;
            if existing.is_some_and(|existing| existing.method_type != parsed) {
                return Err(bad("the Type field of an Auth Method is immutable"));
            }
            parsed
        }
    };
    let ttl = match &body.max_token_ttl {
        Value::Null => std::time::Duration::ZERO,
        Value::String(text) if text.is_empty() => std::time::Duration::ZERO,
        Value::String(text) => weft_api::duration::parse(text).map_err(|e| bad(format!("MaxTokenTTL: {e}")))?,
        Value::Number(nanos) => std::time::Duration::from_nanos(nanos.as_u64().unwrap_or(0)),
        other => return Err(bad(format!("MaxTokenTTL: expected a duration, got {other}"))),
    };
    let shown = |d| weft_api::duration::format(d);
    if !ttl.is_zero() && ttl > MAX_TOKEN_TTL {
        return Err(bad(format!("MaxTokenTTL {} cannot be more than {}", shown(ttl), shown(MAX_TOKEN_TTL))));
    }
    if !ttl.is_zero() && ttl < MIN_TOKEN_TTL {
        return Err(bad(format!("MaxTokenTTL {} cannot be less than {}", shown(ttl), shown(MIN_TOKEN_TTL))));
    }
    let token_locality_global = match body.token_locality.as_str() {
        "" | "local" => false,
        "global" => true,
        _ => return Err(bad("Invalid Auth Method: TokenLocality should be one of 'local' or 'global'")),
    };
    let config = parse_jwt_config(&body.config).map_err(|e| bad(format!("Invalid Auth Method: {e}")))?;
    Ok(AclAuthMethod {
        name: body.name,
        method_type,
        display_name: body.display_name,
        description: body.description,
        max_token_ttl_ms: ttl.as_millis().min(u64::MAX as u128) as u64,
        token_locality_global,
        config,
        indexes: Default::default(),
    })
}

/// Writes a method (create and update are one: Consul's create upserts).
async fn set_method(state: &AppState, acl: &Acl, body: MethodBody) -> Result<Response, ApiError> {
    let existing = state.backend.store().read().acl().auth_method(&body.name).cloned();
    let method = method_from(body, existing.as_ref())?;
    let name = method.name.clone();
    write(state, acl, Command::AclAuthMethodSet(Box::new(method))).await?;
    let tables = state.backend.store().read();
    let stored = tables.acl().auth_method(&name).ok_or(ApiError::AclNotFound)?;
    Ok(Json(method_json(stored, true)).into_response())
}

/// `PUT /v1/acl/auth-method`.
pub async fn create_auth_method(State(state): State<AppState>, acl: Acl, body: Bytes) -> Result<Response, ApiError> {
    enabled(&state, &acl)?;
    write_acl(&acl)?;
    let body: MethodBody = decode_body(&body)?;
    set_method(&state, &acl, body).await
}

/// `PUT /v1/acl/auth-method/<name>`.
pub async fn update_auth_method(
    State(state): State<AppState>,
    acl: Acl,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    enabled(&state, &acl)?;
    write_acl(&acl)?;
    let mut body: MethodBody = decode_body(&body)?;
    if body.name.is_empty() {
        body.name = name.clone();
    }
    if body.name != name {
        return Err(bad("AuthMethod Name in URL and payload do not match"));
    }
    set_method(&state, &acl, body).await
}

/// `GET /v1/acl/auth-method/<name>`.
pub async fn read_auth_method(
    State(state): State<AppState>,
    acl: Acl,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    read_tables(&state, &acl, |tables| {
        let method = tables
            .auth_method(&name)
            .ok_or_else(|| ApiError::NotFound("Requested auth method does not exist: ACL not found".into()))?;
        Ok(method_json(method, true))
    })
}

/// `DELETE /v1/acl/auth-method/<name>`: with its binding rules and the
/// tokens its logins made.
pub async fn delete_auth_method(
    State(state): State<AppState>,
    acl: Acl,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    delete(&state, &acl, Command::AclAuthMethodDelete { name }).await
}

/// `GET /v1/acl/auth-methods`: stubs, without `Config`.
pub async fn list_auth_methods(State(state): State<AppState>, acl: Acl) -> Result<Response, ApiError> {
    read_tables(&state, &acl, |tables| {
        let methods: Vec<Value> = tables.auth_methods().map(|m| method_json(m, false)).collect();
        Ok(Value::Array(methods))
    })
}

// ------------------------------------------------------ binding rules ---

#[derive(Default, Deserialize)]
#[serde(default)]
struct RuleBody {
    #[serde(rename = "id")]
    id: String,
    #[serde(rename = "description")]
    description: String,
    #[serde(rename = "authmethod")]
    auth_method: String,
    #[serde(rename = "selector")]
    selector: String,
    #[serde(rename = "bindtype")]
    bind_type: String,
    #[serde(rename = "bindname")]
    bind_name: String,
}

fn rule_json(rule: &AclBindingRule) -> Value {
    json!({
        "ID": rule.id,
        "Description": rule.description,
        "AuthMethod": rule.auth_method,
        "Selector": rule.selector,
        "BindType": rule.bind_type.as_str(),
        "BindName": rule.bind_name,
        "CreateIndex": rule.indexes.create.get(),
        "ModifyIndex": rule.indexes.modify.get(),
    })
}

/// Checks a rule's body as Consul does; `existing` is the rule it updates.
fn rule_from(
    state: &AppState,
    body: RuleBody,
    id: String,
    existing: Option<&AclBindingRule>,
) -> Result<AclBindingRule, ApiError> {
    let auth_method = match (body.auth_method.as_str(), existing) {
        ("", Some(existing)) => existing.auth_method.clone(),
        ("", None) => return Err(bad("Invalid Binding Rule: no AuthMethod is set")),
        (name, Some(existing)) if name != existing.auth_method => {
            return Err(bad("the AuthMethod field of an Binding Rule is immutable"));
        }
        (name, _) => name.to_owned(),
    };
    let tables = state.backend.store().read();
    let method = tables
        .acl()
        .auth_method(&auth_method)
        .ok_or_else(|| bad(format!("cannot find auth method with name {auth_method:?}")))?;
    if body.bind_type.is_empty() {
        return Err(bad("Invalid Binding Rule: no BindType is set"));
    }
    let bind_type = BindType::parse(&body.bind_type)
        .ok_or_else(|| bad(format!("Invalid Binding Rule: unknown BindType {:?}", body.bind_type)))?;
    let rule = AclBindingRule {
        id,
        description: body.description,
        auth_method,
        selector: body.selector,
        bind_type,
        bind_name: body.bind_name,
        indexes: Default::default(),
    };
    check_binding_rule(&rule, &method.config).map_err(bad)?;
    Ok(rule)
}

async fn set_rule(state: &AppState, acl: &Acl, rule: AclBindingRule) -> Result<Response, ApiError> {
    let id = rule.id.clone();
    write(state, acl, Command::AclBindingRuleSet(Box::new(rule))).await?;
    let tables = state.backend.store().read();
    let stored = tables.acl().binding_rule(&id).ok_or(ApiError::AclNotFound)?;
    Ok(Json(rule_json(stored)).into_response())
}

/// `PUT /v1/acl/binding-rule`: a new rule, its ID made here.
pub async fn create_binding_rule(State(state): State<AppState>, acl: Acl, body: Bytes) -> Result<Response, ApiError> {
    enabled(&state, &acl)?;
    write_acl(&acl)?;
    let body: RuleBody = decode_body(&body)?;
    if !body.id.is_empty() {
        return Err(bad("BindingRule ID in URL and payload do not match"));
    }
    let rule = rule_from(&state, body, new_id(), None)?;
    set_rule(&state, &acl, rule).await
}

/// `PUT /v1/acl/binding-rule/<id>`.
pub async fn update_binding_rule(
    State(state): State<AppState>,
    acl: Acl,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    enabled(&state, &acl)?;
    write_acl(&acl)?;
    let body: RuleBody = decode_body(&body)?;
    if !body.id.is_empty() && body.id != id {
        return Err(bad("BindingRule ID in URL and payload do not match"));
    }
    let existing = state.backend.store().read().acl().binding_rule(&id).cloned();
    let existing = existing.ok_or_else(|| bad(format!("cannot find binding rule {id}")))?;
    let rule = rule_from(&state, body, id, Some(&existing))?;
    set_rule(&state, &acl, rule).await
}

/// `GET /v1/acl/binding-rule/<id>`.
pub async fn read_binding_rule(
    State(state): State<AppState>,
    acl: Acl,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    read_tables(&state, &acl, |tables| {
        let rule = tables
            .binding_rule(&id)
            .ok_or_else(|| ApiError::NotFound("Requested binding rule does not exist: ACL not found".into()))?;
        Ok(rule_json(rule))
    })
}

/// `DELETE /v1/acl/binding-rule/<id>`.
pub async fn delete_binding_rule(
    State(state): State<AppState>,
    acl: Acl,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    delete(&state, &acl, Command::AclBindingRuleDelete { id }).await
}

/// `GET /v1/acl/binding-rules` (`?authmethod=` narrows it).
pub async fn list_binding_rules(
    State(state): State<AppState>,
    acl: Acl,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = QueryParams::parse(raw.as_deref());
    read_tables(&state, &acl, |tables| {
        let rules: Vec<Value> = tables
            .binding_rules()
            .filter(|r| query.get("authmethod").is_none_or(|m| r.auth_method == m))
            .map(rule_json)
            .collect();
        Ok(Value::Array(rules))
    })
}

// ------------------------------------------------------ login, logout ---

#[derive(Default, Deserialize)]
#[serde(default)]
struct LoginBody {
    #[serde(rename = "authmethod")]
    auth_method: String,
    #[serde(rename = "bearertoken")]
    bearer_token: String,
    #[serde(rename = "meta")]
    meta: BTreeMap<String, String>,
}

/// `POST /v1/acl/login`: open to anyone; the JWT is the credential. The
/// token made, with its SecretID, shown this once.
pub async fn login(State(state): State<AppState>, acl: Acl, body: Bytes) -> Result<Response, ApiError> {
    enabled(&state, &acl)?;
    let body: LoginBody = decode_body(&body)?;
    if body.auth_method.is_empty() || body.bearer_token.is_empty() {
        return Err(bad("Invalid Login request: Missing auth parameters"));
    }
    let params = LoginParams { auth_method: body.auth_method, bearer_token: body.bearer_token, meta: body.meta };
    let outcome = state.backend.login(&params).await?;
    let tables = state.backend.store().read();
    let stored = tables.acl().token(&outcome.token.accessor_id).cloned().unwrap_or(outcome.token);
    Ok(Json(token_json(&stored, tables.acl(), Some(&outcome.secret_id))).into_response())
}

/// `POST /v1/acl/logout`: deletes the caller's own token, if a login made
/// it.
pub async fn logout(State(state): State<AppState>, acl: Acl) -> Result<Response, ApiError> {
    enabled(&state, &acl)?;
    state.backend.logout(acl.secret()).await?;
    Ok(Json(true).into_response())
}

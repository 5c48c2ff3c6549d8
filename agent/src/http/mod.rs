//! The Consul-compatible HTTP API.
//!
//! **API Boundary:** this module is the only place that knows Consul's JSON
//! shapes, query parameters and headers; below it everything is typed records.
//! **Architecture Invariant:** every route, and the fallback for unknown
//! paths, sits behind [`authz::authorize`], the one authorization point.

mod acl;
mod agent;
pub mod authz;
mod body;
mod catalog;
mod coalesce;
mod config_entries;
mod connect;
mod error;
mod event;
mod health;
mod intentions;
mod join_tokens;
mod kv;
mod listener;
mod metrics;
mod operator;
mod query;
mod read;
mod serve;
mod session;
mod snapshot;
mod status;
mod troubleshoot;
mod txn;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::routing::{any, delete, get, post, put};
use axum::Router;
use tokio::net::TcpListener;

use weft_api::catalog::Node;
use weft_api::kv::MAX_VALUE_BYTES;

use crate::agent::LeaveHandle;
use crate::backend::Backend;
use crate::config::AgentConfig;
use crate::connect::LeafCache;
use crate::local::AdminPorts;
use crate::local::LocalState;
pub use error::ApiError;
pub(crate) use health::health_entry_json;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub backend: Backend,
    pub config: Arc<AgentConfig>,
    /// This agent's own services and checks.
    pub local: Arc<LocalState>,
    /// This node's catalog record.
    pub node: Arc<Node>,
    /// `PUT /v1/agent/leave` asks the agent to leave through it.
    pub leave: LeaveHandle,
    /// Leaf certificates for this agent's services.
    pub leaves: Arc<LeafCache>,
    /// Where the sidecars this agent runs serve their admin ports.
    pub admin_ports: AdminPorts,
    /// ACL settings, this agent's tokens and its cache of resolved tokens.
    pub acl: Arc<crate::acl::AclState>,
    /// `limits { rpc_rate rpc_max_burst }`: the writes this agent takes.
    pub writes: Option<Arc<weft_server::rate::TokenBucket>>,
}

/// Largest request body read for an endpoint without a limit of its own
/// (JSON registrations, entries, policies). KV values (512 KiB) and snapshot
/// restores have theirs, set on their routes: a body is read no further
/// than its route's limit, so an oversized upload costs no more memory
/// than the limit before its 413.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/kv", any(kv::handle).layer(DefaultBodyLimit::max(MAX_VALUE_BYTES)))
        .route("/v1/kv/", any(kv::handle).layer(DefaultBodyLimit::max(MAX_VALUE_BYTES)))
        .route("/v1/kv/{*key}", any(kv::handle).layer(DefaultBodyLimit::max(MAX_VALUE_BYTES)))
        .route("/v1/catalog/register", put(catalog::register).post(catalog::register))
        .route("/v1/catalog/deregister", put(catalog::deregister).post(catalog::deregister))
        .route("/v1/catalog/services", get(catalog::services))
        .route("/v1/catalog/datacenters", get(catalog::datacenters))
        .route("/v1/catalog/service/{name}", get(catalog::service))
        .route("/v1/catalog/connect/{name}", get(catalog::connect))
        .route("/v1/catalog/gateway-services/{gateway}", get(catalog::gateway_services))
        .route("/v1/catalog/nodes", get(catalog::nodes))
        .route("/v1/catalog/node/{name}", get(catalog::node))
        .route("/v1/health/service/{name}", get(health::service))
        .route("/v1/health/connect/{name}", get(health::connect))
        .route("/v1/health/ingress/{name}", get(health::ingress))
        .route("/v1/health/checks/{name}", get(health::service_checks))
        .route("/v1/health/node/{name}", get(health::node))
        .route("/v1/health/state/{state}", get(health::in_state))
        .route("/v1/status/leader", get(status::leader))
        .route("/v1/status/peers", get(status::peers))
        .route("/v1/operator/raft/configuration", get(status::raft_configuration))
        .route("/v1/operator/autopilot/health", get(operator::autopilot_health))
        .route("/v1/operator/usage", get(operator::usage))
        .route("/v1/operator/raft/peer", delete(status::remove_peer))
        .route("/v1/operator/join-token", put(join_tokens::create).get(join_tokens::list))
        .route("/v1/operator/join-token/{id}", delete(join_tokens::delete))
        .route("/v1/operator/enrollment", get(join_tokens::enrollments))
        .route("/v1/operator/enrollment/{node}", delete(join_tokens::revoke))
        .route("/v1/event/fire/{name}", put(event::fire))
        .route("/v1/event/list", get(event::list))
        .route("/v1/session/create", put(session::create))
        .route("/v1/session/destroy/{id}", put(session::destroy))
        .route("/v1/session/renew/{id}", put(session::renew))
        .route("/v1/session/info/{id}", get(session::info))
        .route("/v1/session/node/{node}", get(session::node))
        .route("/v1/session/list", get(session::list))
        .route("/v1/txn", put(txn::handle).layer(DefaultBodyLimit::max(weft_api::txn::MAX_TXN_BODY_BYTES)))
        .route("/v1/agent/self", get(status::agent_self))
        .route("/v1/agent/members", get(agent::members))
        .route("/v1/agent/metrics", get(metrics::metrics))
        .route("/v1/agent/services", get(agent::services))
        .route("/v1/agent/service/{id}", get(agent::service))
        .route("/v1/agent/service/register", put(agent::register_service))
        .route("/v1/agent/service/deregister/{id}", put(agent::deregister_service))
        .route("/v1/agent/checks", get(agent::checks))
        .route("/v1/agent/check/register", put(agent::register_check))
        .route("/v1/agent/check/deregister/{id}", put(agent::deregister_check))
        .route("/v1/agent/check/update/{id}", put(agent::check_update))
        .route("/v1/agent/check/{verb}/{id}", put(agent::ttl_update))
        .route("/v1/agent/health/service/id/{id}", get(agent::health_by_id))
        .route("/v1/agent/health/service/name/{name}", get(agent::health_by_name))
        .route("/v1/connect/ca/roots", get(connect::roots))
        .route("/v1/connect/ca/configuration", get(connect::configuration).put(connect::set_configuration))
        .route("/v1/agent/connect/ca/roots", get(connect::roots))
        .route("/v1/agent/connect/ca/leaf/{service}", get(connect::leaf))
        .route("/v1/agent/connect/proxy", get(connect::standalone_proxy_snapshot))
        .route("/v1/agent/connect/proxy/{id}", get(connect::proxy_snapshot))
        .route("/v1/agent/connect/gateway/{id}", get(connect::gateway_snapshot))
        .route("/v1/agent/reload", put(agent::reload))
        .route("/v1/agent/leave", put(agent::leave))
        .route("/v1/agent/maintenance", put(agent::node_maintenance))
        .route("/v1/agent/service/maintenance/{id}", put(agent::service_maintenance))
        .route(
            "/v1/snapshot",
            get(snapshot::save).put(snapshot::restore).layer(DefaultBodyLimit::max(snapshot::MAX_BODY_BYTES)),
        )
        .route("/v1/connect/intentions", get(intentions::list).post(intentions::create))
        .route(
            "/v1/connect/intentions/exact",
            get(intentions::get_exact).put(intentions::put_exact).delete(intentions::delete_exact),
        )
        .route("/v1/connect/intentions/match", get(intentions::matches))
        .route("/v1/connect/intentions/check", get(intentions::check))
        .route(
            "/v1/connect/intentions/{id}",
            get(intentions::get_by_id).put(intentions::update_by_id).delete(intentions::delete_by_id),
        )
        .route("/v1/agent/connect/authorize", axum::routing::post(intentions::authorize))
        .route("/v1/discovery-chain/{service}", get(troubleshoot::discovery_chain))
        .route("/v1/agent/troubleshoot/route", get(troubleshoot::route))
        .route("/v1/config", put(config_entries::apply))
        .route("/v1/config/{kind}", get(config_entries::list))
        .route("/v1/config/{kind}/{name}", get(config_entries::get).delete(config_entries::delete))
        .route("/v1/acl/bootstrap", put(acl::bootstrap))
        .route("/v1/acl/token", put(acl::create_token))
        .route("/v1/acl/token/self", get(acl::token_self))
        .route("/v1/acl/token/{id}", get(acl::read_token).put(acl::update_token).delete(acl::delete_token))
        .route("/v1/acl/token/{id}/clone", put(acl::clone_token))
        .route("/v1/acl/tokens", get(acl::list_tokens))
        .route("/v1/acl/policy", put(acl::create_policy))
        .route("/v1/acl/policy/name/{name}", get(acl::read_policy_by_name))
        .route("/v1/acl/policy/{id}", get(acl::read_policy).put(acl::update_policy).delete(acl::delete_policy))
        .route("/v1/acl/policies", get(acl::list_policies))
        .route("/v1/acl/role", put(acl::create_role))
        .route("/v1/acl/role/name/{name}", get(acl::read_role_by_name))
        .route("/v1/acl/role/{id}", get(acl::read_role).put(acl::update_role).delete(acl::delete_role))
        .route("/v1/acl/roles", get(acl::list_roles))
        .route("/v1/acl/templated-policies", get(acl::templated::list))
        .route("/v1/acl/templated-policy/name/{*name}", get(acl::templated::read))
        .route("/v1/acl/templated-policy/preview/{*name}", post(acl::templated::preview))
        .route("/v1/acl/auth-method", put(acl::login::create_auth_method))
        .route(
            "/v1/acl/auth-method/{name}",
            get(acl::login::read_auth_method)
                .put(acl::login::update_auth_method)
                .delete(acl::login::delete_auth_method),
        )
        .route("/v1/acl/auth-methods", get(acl::login::list_auth_methods))
        .route("/v1/acl/binding-rule", put(acl::login::create_binding_rule))
        .route(
            "/v1/acl/binding-rule/{id}",
            get(acl::login::read_binding_rule)
                .put(acl::login::update_binding_rule)
                .delete(acl::login::delete_binding_rule),
        )
        .route("/v1/acl/binding-rules", get(acl::login::list_binding_rules))
        .route("/v1/acl/login", post(acl::login::login))
        .route("/v1/acl/logout", post(acl::login::logout))
        .route("/v1/agent/token/{kind}", put(acl::set_agent_token))
        .fallback(unknown_path)
        .method_not_allowed_fallback(method_not_allowed)
        // Next to the handlers: each answer asked the ACL (see authz::guard).
        .layer(axum::middleware::from_fn(authz::guard))
        // Inside the authorization point: every request is authorized before it may share.
        .layer(axum::middleware::from_fn_with_state(coalesce::InFlight::default(), coalesce::coalesce))
        .layer(axum::middleware::from_fn_with_state(state.clone(), authz::authorize))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn unknown_path(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("unknown API path {}: see Consul's HTTP API for the endpoints Weft serves", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("method {method} not allowed on {}", uri.path()))
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn run(
    state: AppState,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (per_client, total) = (state.config.http_max_conns_per_client, state.config.http_max_conns);
    let listener = listener::LimitedListener::new(listener, per_client, total);
    serve::serve(listener, router(state), shutdown).await;
    Ok(())
}

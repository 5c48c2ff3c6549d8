//! The one authorization point. Every request, the unknown-path fallback
//! included, passes through [`authorize`] before its handler runs: it reads
//! the ACL token the way Consul clients send it (`X-Consul-Token`,
//! `Authorization: Bearer`, `?token=`), resolves it against this agent's
//! copy of the ACL tables (cached until they change) and leaves an [`Acl`]
//! in the request. A token the tables do not know is a 403 `ACL not found`
//! before any handler runs; without a token, the agent's default token (or
//! the anonymous one) is used.
//!
//! Handlers ask the [`Acl`] for the [`Permission`]s the request needs, once
//! they know the names involved (a key, the service in a body), or filter
//! what they answer with it. [`guard`], just outside the handlers, makes
//! that a rule rather than a habit: a successful answer from a handler that
//! asked nothing is replaced by a 500 (it fails closed), and an answer that
//! left items out gets `X-Consul-Results-Filtered-By-ACLs: true`.
//!
//! A read whose token stops resolving while it is served (deleted, or
//! expired: a long-poll that outlives it) is ended there with a 403 `ACL
//! not found`, and one whose token loses a permission the handler required
//! (a policy edit) with that permission's 403, within moments of the change
//! reaching this agent's copy of the ACL tables ([`until_revoked`]). A
//! sidecar's configuration is such a read: its sidecar stops on the 403.
//!
//! With ACLs off every permission is granted, as in Consul. Resolving
//! tokens is [`crate::acl`]'s (DNS resolves the default token there too).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use weft_acl::{command_permissions, Permission, ResolveError};
use weft_api::acl::{Access, NamedResource};
use weft_api::command::{Command, CommandOutcome};
use weft_server::store::Table;
use weft_server::Applied;
use weft_server::ServerError;

use super::error::ApiError;
use super::query::meta_headers;
use super::AppState;
use crate::acl::Caller;

/// The header that says an answer left out what the token may not see.
pub const FILTERED_HEADER: &str = "x-consul-results-filtered-by-acls";

/// The caller's ACL token, resolved: what handlers ask.
#[derive(Clone)]
pub struct Acl(Arc<Call>);

struct Call {
    caller: Caller,
    checked: AtomicBool,
    filtered: AtomicBool,
    /// What [`Acl::require`] granted: checked again while a read waits.
    required: Mutex<Vec<Permission>>,
}

impl Acl {
    fn new(caller: Caller) -> Acl {
        Acl(Arc::new(Call {
            caller,
            checked: AtomicBool::new(false),
            filtered: AtomicBool::new(false),
            required: Mutex::new(Vec::new()),
        }))
    }

    /// Refuses the request unless the token has `permission`, with Consul's
    /// message.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.allows(&permission) {
            if self.enabled() {
                self.0.required.lock().unwrap_or_else(|e| e.into_inner()).push(permission);
            }
            return Ok(());
        }
        tracing::info!(accessor = %self.0.caller.accessor_id, permission = %permission.label(), name = ?permission.name(), "ACL denied a request");
        Err(denied(&self.0.caller.accessor_id, &permission))
    }

    /// The first permission this request was granted that the token, as
    /// the tables now resolve it (`now`), no longer has.
    fn lost(&self, now: &Acl) -> Option<ApiError> {
        let required = self.0.required.lock().unwrap_or_else(|e| e.into_inner());
        let lost = required.iter().find(|permission| !now.0.caller.authorizer.allows(permission))?;
        Some(denied(&self.0.caller.accessor_id, lost))
    }

    /// Whether the token has `permission` (for filtering what is answered).
    pub fn allows(&self, permission: &Permission) -> bool {
        self.0.checked.store(true, Ordering::Relaxed);
        self.0.caller.authorizer.allows(permission)
    }

    /// `resource:access` on `name`.
    pub fn allows_named(&self, resource: NamedResource, name: &str, access: Access) -> bool {
        self.allows(&Permission::Named(resource, name.to_owned(), access))
    }

    /// Keeps the items of `items` the token may see (by `allowed`), noting
    /// when some were left out.
    pub fn retain<T>(&self, items: &mut Vec<T>, mut allowed: impl FnMut(&Acl, &T) -> bool) {
        let before = items.len();
        items.retain(|item| allowed(self, item));
        self.0.checked.store(true, Ordering::Relaxed);
        if items.len() < before {
            self.0.filtered.store(true, Ordering::Relaxed);
        }
    }

    /// Notes that an answer left out what the token may not see.
    pub fn mark_filtered(&self) {
        self.0.filtered.store(true, Ordering::Relaxed);
    }

    /// Says that this request needs no permission (Consul's public endpoints).
    pub fn public(&self) {
        self.0.checked.store(true, Ordering::Relaxed);
    }

    /// The SecretID the request presented (or the default token's).
    pub fn secret(&self) -> &str {
        &self.0.caller.secret
    }

    pub fn accessor_id(&self) -> &str {
        &self.0.caller.accessor_id
    }

    pub fn enabled(&self) -> bool {
        self.0.caller.enabled
    }
}

/// Consul's refusal: `token with AccessorID '…' lacks permission 'service:write' on "web"`.
fn denied(accessor_id: &str, permission: &Permission) -> ApiError {
    let on = permission.name().map(|name| format!(" on {name:?}")).unwrap_or_default();
    ApiError::Forbidden(format!("token with AccessorID '{accessor_id}' lacks permission '{}'{on}", permission.label()))
}

impl<S: Send + Sync> FromRequestParts<S> for Acl {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Acl, ApiError> {
        parts
            .extensions
            .get::<Acl>()
            .cloned()
            .ok_or_else(|| ApiError::Internal("the authorization layer did not run".into()))
    }
}

/// The one path of an HTTP write: refused unless the token holds what
/// the write needs (`weft_acl::command_permissions`, the rules the servers
/// check too), then written for the caller (a client agent forwards its
/// token).
pub async fn write(state: &AppState, acl: &Acl, command: Command) -> Result<Applied, ApiError> {
    let needed = {
        let tables = state.backend.store().read();
        command_permissions(&command, &*tables)
    };
    acl.public();
    for permission in needed {
        acl.require(permission)?;
    }
    if state.writes.as_ref().is_some_and(|bucket| !bucket.take()) {
        // Consul's wording, which its clients know.
        return Err(ApiError::TooManyRequests("RPC rate limit exceeded".into()));
    }
    Ok(state.backend.write_as(command, acl.secret()).await?)
}

/// [`write`]s a command and answers `true`/`false` as Consul does
/// (`false`: a check-and-set missed); a refusal is a 400 with the reason.
pub async fn write_bool(state: &AppState, acl: &Acl, command: Command) -> Result<Response, ApiError> {
    let applied = write(state, acl, command).await?;
    let body = match applied.outcome {
        CommandOutcome::Done | CommandOutcome::Cas(true) => true,
        CommandOutcome::Cas(false) => false,
        CommandOutcome::Rejected(reason) => return Err(ApiError::BadRequest(reason)),
        // The server unpacks its own batches and checks its own checked
        // writes again; a single write never comes back as either, nor
        // anything but a transaction as a transaction's outcome.
        other @ (CommandOutcome::Batch(_) | CommandOutcome::Outdated | CommandOutcome::Txn(_)) => {
            return Err(ApiError::Cluster(ServerError::Fatal(format!("unexpected outcome {other:?}"))))
        }
    };
    Ok((meta_headers(&state.backend, applied.index), Json(body)).into_response())
}

/// Reads the token from `X-Consul-Token`, `Authorization: Bearer`, or `?token=`.
pub fn token_from(headers: &HeaderMap, query: Option<&str>) -> String {
    if let Some(value) = headers.get("x-consul-token").and_then(|v| v.to_str().ok()) {
        return value.to_owned();
    }
    if let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        if let Some(bearer) = value.strip_prefix("Bearer ") {
            return bearer.trim().to_owned();
        }
    }
    let from_query = query.and_then(|q| {
        q.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (name == "token").then(|| percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned())
        })
    });
    from_query.unwrap_or_default()
}

/// Resolves `secret` (empty: the default token, else the anonymous one).
pub fn resolve(state: &AppState, secret: String) -> Result<Acl, ApiError> {
    match state.acl.resolve(state.backend.store(), &secret) {
        Ok(caller) => Ok(Acl::new(caller)),
        Err(ResolveError::NotFound | ResolveError::Expired) => Err(ApiError::AclNotFound),
    }
}

/// Middleware: resolves the request's token and leaves the [`Acl`] in its
/// extensions, or answers 403 for a token no one knows; ends the request
/// if the token stops resolving before it is answered.
pub async fn authorize(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let secret = token_from(request.headers(), request.uri().query());
    match resolve(&state, secret) {
        // Reads may wait (blocking queries); a write is short, and may be
        // the one revoking its own token (logout).
        Ok(acl) if acl.enabled() && request.method() == axum::http::Method::GET => {
            request.extensions_mut().insert(acl.clone());
            // Most reads are answered on their first poll, and never poll
            // the watch.
            tokio::select! {
                biased;
                response = next.run(request) => response,
                revoked = until_revoked(&state, acl) => revoked.into_response(),
            }
        }
        Ok(acl) => {
            request.extensions_mut().insert(acl);
            next.run(request).await
        }
        Err(denied) => denied.into_response(),
    }
}

/// Resolves when the request's token no longer does, or no longer has a
/// permission the handler required: checked after each change to the ACL
/// tables, and at the token's expiry.
async fn until_revoked(state: &AppState, acl: Acl) -> ApiError {
    let (secret, expires) = (acl.secret().to_owned(), acl.0.caller.expiration_time);
    let store = state.backend.store();
    loop {
        let index = store.read().index(Table::Acl);
        let now = crate::acl::unix_now();
        // A second past the expiry, when the token stops resolving.
        let wait =
            expires.map_or(Duration::from_secs(3600), |at| Duration::from_secs((at - now).clamp(0, 3600) as u64 + 1));
        let changed = store.blocking_read(&[Table::Acl], index, wait, |tables| ((), tables.index(Table::Acl))).await;
        match resolve(state, secret.clone()) {
            Err(revoked) => {
                tracing::info!("a request's token was revoked while it was served; ended");
                return revoked;
            }
            Ok(now) => {
                if let Some(lost) = acl.lost(&now) {
                    tracing::info!(accessor = %acl.accessor_id(), "a request's token lost a permission while it was served; ended");
                    return lost;
                }
            }
        }
        if changed.index == index && store.is_closed() {
            // Shutting down: the request ends with the server.
            std::future::pending::<()>().await;
        }
    }
}

/// Middleware around the handlers: a successful answer whose handler asked
/// the [`Acl`] nothing is refused (500, logged), and an answer that left
/// items out says so.
pub async fn guard(request: Request, next: Next) -> Response {
    let acl = request.extensions().get::<Acl>().cloned();
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    let Some(acl) = acl else { return response };
    if response.status().is_success() && !acl.0.checked.load(Ordering::Relaxed) {
        tracing::error!(%path, "a handler answered without asking the ACL anything; refused");
        return ApiError::Internal(format!("{path} did not check the request's ACL token")).into_response();
    }
    if acl.enabled() && acl.0.filtered.load(Ordering::Relaxed) {
        response.headers_mut().insert(FILTERED_HEADER, HeaderValue::from_static("true"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_wins_then_bearer_then_query() {
        let mut headers = HeaderMap::new();
        assert_eq!(token_from(&headers, Some("a=1&token=q%2Bx")), "q+x");
        headers.insert("authorization", "Bearer b".parse().unwrap());
        assert_eq!(token_from(&headers, Some("token=q")), "b");
        headers.insert("x-consul-token", "h".parse().unwrap());
        assert_eq!(token_from(&headers, None), "h");
    }
}

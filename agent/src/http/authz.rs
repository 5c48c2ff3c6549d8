//! The one authorization point. Every route, the unknown-path fallback
//! included, passes through [`authorize`] before its handler runs; it reads
//! the ACL token the way Consul clients send it and asks the [`Authorizer`].
//!
//! ACLs are not enforced yet (allow-all, as Consul with ACLs disabled); when
//! they arrive, only this module changes.

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// The caller's ACL token, as found on the request (empty = anonymous).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Token(pub String);

/// Decides whether a token may make a request. Allow-all for now.
#[derive(Clone, Debug, Default)]
pub struct Authorizer;

impl Authorizer {
    pub fn authorize(&self, _token: &Token, _method: &axum::http::Method, _path: &str) -> Result<(), ApiError> {
        Ok(())
    }
}

/// Reads the token from `X-Consul-Token`, `Authorization: Bearer`, or `?token=`.
pub fn token_from(headers: &HeaderMap, query: Option<&str>) -> Token {
    if let Some(value) = headers.get("x-consul-token").and_then(|v| v.to_str().ok()) {
        return Token(value.to_owned());
    }
    if let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        if let Some(bearer) = value.strip_prefix("Bearer ") {
            return Token(bearer.trim().to_owned());
        }
    }
    let from_query = query.and_then(|q| {
        q.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (name == "token").then(|| percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned())
        })
    });
    Token(from_query.unwrap_or_default())
}

/// Middleware: authorizes the request and leaves the [`Token`] in its extensions.
pub async fn authorize(mut request: Request, next: Next) -> Response {
    let token = token_from(request.headers(), request.uri().query());
    let authorizer = Authorizer;
    if let Err(denied) = authorizer.authorize(&token, request.method(), request.uri().path()) {
        return denied.into_response();
    }
    request.extensions_mut().insert(token);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_wins_then_bearer_then_query() {
        let mut headers = HeaderMap::new();
        assert_eq!(token_from(&headers, Some("a=1&token=q%2Bx")), Token("q+x".into()));
        headers.insert("authorization", "Bearer b".parse().unwrap());
        assert_eq!(token_from(&headers, Some("token=q")), Token("b".into()));
        headers.insert("x-consul-token", "h".parse().unwrap());
        assert_eq!(token_from(&headers, None), Token("h".into()));
    }
}

//! A small client of Weft's (Consul-compatible) HTTP API, used by the `weft`
//! CLI and the end-to-end tests. It speaks raw requests; callers decode JSON.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{HeaderMap, Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC};

/// Characters escaped in a KV key's path (`/` is kept: it separates segments).
const KEY_ESCAPES: &AsciiSet =
    &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'?').add(b'<').add(b'>').add(b'`').add(b'{').add(b'}');

/// Characters escaped in one path segment (an ID or a name).
const SEGMENT_ESCAPES: &AsciiSet = &KEY_ESCAPES.add(b'/');

/// Characters escaped in a query parameter's value: all but RFC 3986's
/// unreserved ones (and `*`, kept readable for wildcard names).
const QUERY_VALUE_ESCAPES: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'*');

/// Why a request got no HTTP response.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid request to {url}: {reason}")]
    InvalidRequest { url: String, reason: String },
    #[error("could not reach the Weft agent at {addr} ({reason}); is `weft agent` or `weft dev` running there? (set --http-addr or WEFT_HTTP_ADDR)")]
    Unreachable { addr: String, reason: String },
    #[error("request to {url} timed out after {after:?}")]
    TimedOut { url: String, after: Duration },
}

/// An HTTP response, fully read.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value of `X-Consul-Index`, if present and numeric.
    pub fn consul_index(&self) -> Option<u64> {
        self.header("x-consul-index")?.parse().ok()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
}

/// A client bound to one agent's HTTP address.
#[derive(Clone)]
pub struct HttpClient {
    addr: String,
    token: Option<String>,
    timeout: Duration,
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl HttpClient {
    /// `addr` is `host:port`, optionally with an `http://` prefix.
    pub fn new(addr: &str, token: Option<String>) -> Self {
        let addr = addr.trim_start_matches("http://").trim_end_matches('/').to_owned();
        Self {
            addr,
            token,
            timeout: Duration::from_secs(660),
            inner: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Overrides the per-request time limit (default 11 minutes, above the
    /// longest blocking query).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `method path_and_query` with an optional body.
    pub async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response, ClientError> {
        let url = format!("http://{}{}", self.addr, path_and_query);
        let mut builder = Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            builder = builder.header("X-Consul-Token", token);
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::InvalidRequest { url: url.clone(), reason: e.to_string() })?;
        let exchange = async {
            let response = self
                .inner
                .request(request)
                .await
                .map_err(|e| ClientError::Unreachable { addr: self.addr.clone(), reason: error_chain(&e) })?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| ClientError::Unreachable { addr: self.addr.clone(), reason: e.to_string() })?;
            Ok(Response { status: parts.status.as_u16(), headers: parts.headers, body: body.to_bytes().to_vec() })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::TimedOut { url, after: self.timeout })?
    }

    pub async fn get(&self, path_and_query: &str) -> Result<Response, ClientError> {
        self.request(Method::GET, path_and_query, None).await
    }

    pub async fn put(&self, path_and_query: &str, body: impl Into<Vec<u8>>) -> Result<Response, ClientError> {
        self.request(Method::PUT, path_and_query, Some(body.into())).await
    }

    pub async fn post(&self, path_and_query: &str, body: impl Into<Vec<u8>>) -> Result<Response, ClientError> {
        self.request(Method::POST, path_and_query, Some(body.into())).await
    }

    pub async fn delete(&self, path_and_query: &str) -> Result<Response, ClientError> {
        self.request(Method::DELETE, path_and_query, None).await
    }
}

/// `/v1/kv/<key>` with the key percent-encoded (slashes kept).
pub fn kv_path(key: &str) -> String {
    format!("/v1/kv/{}", utf8_percent_encode(key.trim_start_matches('/'), KEY_ESCAPES))
}

/// One path segment (a service ID, a check ID), percent-encoded.
pub fn path_segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT_ESCAPES).to_string()
}

/// A query parameter's value, percent-encoded (`&`, `=`, `+`, `#` included).
pub fn query_value(text: &str) -> String {
    utf8_percent_encode(text, QUERY_VALUE_ESCAPES).to_string()
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

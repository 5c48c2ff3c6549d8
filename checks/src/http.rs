//! HTTP checks: one request, judged by its status code.
//!
//! As in Consul:
//!
//! - 2xx is passing, 429 (Too Many Requests) is warning, anything else is critical, and so is
//!   a request that cannot be made (bad URL, refused connection, TLS failure, timeout).
//! - The request is `method` (empty means `GET`) to `url` with `headers` and `body`.
//!   `User-Agent: Weft Health Check` and `Accept: text/plain, text/*, */*` are added unless
//!   given; a `Host` header overrides the host the request names.
//! - Every run opens its own connection and sends `Connection: close` (Consul turns keep-alives
//!   off so a check never fails on a stale pooled connection).
//! - Redirects are followed, since Consul uses Go's default HTTP client, which does: up to
//!   [`MAX_REQUESTS`] requests in all, then the check fails with `stopped after 10 redirects`.
//!   A 301, 302 or 303 turns the request into a body-less `GET` (a `HEAD` stays `HEAD`); a 307
//!   or 308 repeats it as it was. `Authorization` and `Cookie` headers are dropped when a
//!   redirect leaves the original host. [`HttpProbe::disable_redirects`] (Consul's
//!   `DisableRedirects`) reports the 3xx itself instead, which is critical.
//! - The output reads `HTTP GET http://127.0.0.1:8080/health: 200 OK Output: <body>`, with the
//!   body cut to its first [`MAX_OUTPUT_BYTES`](crate::MAX_OUTPUT_BYTES) (the rest is not read).
//!
//! `https` URLs use rustls (see the crate's `transport` module), speaking HTTP/1.1 only.

use std::collections::BTreeMap;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderName, HeaderValue, InvalidHeaderName, InvalidHeaderValue};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;
use url::{Host, Position, Url};

use crate::output::{error_chain, Head};
use crate::transport::{self, Alpn, ConnectError, Tls};
use crate::{HealthStatus, ProbeResult, MAX_OUTPUT_BYTES};

/// The most requests one run makes while following redirects (Go's default client's limit).
pub const MAX_REQUESTS: usize = 10;

/// The `User-Agent` sent unless the probe's headers name one.
pub const USER_AGENT: &str = "Weft Health Check";

/// The `Accept` header sent unless the probe's headers name one.
pub const ACCEPT: &str = "text/plain, text/*, */*";

/// An HTTP check's request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpProbe {
    /// An absolute `http` or `https` URL.
    pub url: String,
    /// The request method; empty means `GET`.
    pub method: String,
    /// Request headers, each with one or more values (Consul's `Header`).
    pub headers: BTreeMap<String, Vec<String>>,
    /// The request body, if any.
    pub body: Option<String>,
    /// Report a redirect as the check's result instead of following it.
    pub disable_redirects: bool,
    /// Accept any server certificate (`https` only).
    pub tls_skip_verify: bool,
    /// The name to send as SNI and to verify the certificate against, instead of the URL's host.
    pub tls_server_name: Option<String>,
}

impl HttpProbe {
    /// A `GET` of `url` with no extra headers.
    pub fn get(url: impl Into<String>) -> Self {
        HttpProbe { url: url.into(), ..HttpProbe::default() }
    }

    /// The method to use: [`HttpProbe::method`], or `GET` when that is empty.
    pub fn method(&self) -> &str {
        if self.method.is_empty() {
            "GET"
        } else {
            &self.method
        }
    }
}

/// Makes the request (following redirects), giving up after `timeout`.
pub async fn run(probe: &HttpProbe, timeout: Duration) -> ProbeResult {
    let target = format!("HTTP {} {}", probe.method(), probe.url);
    match tokio::time::timeout(timeout, fetch(probe)).await {
        Ok(Ok(reply)) => ProbeResult::new(
            status_for(reply.status),
            format!("{target}: {} Output: {}", status_line(reply.status), reply.body),
        ),
        Ok(Err(err)) => ProbeResult::critical(format!("{target}: {}", error_chain(&err))),
        Err(_) => ProbeResult::critical(format!("{target}: timed out after {timeout:?}")),
    }
}

fn status_for(code: StatusCode) -> HealthStatus {
    if code.is_success() {
        HealthStatus::Passing
    } else if code == StatusCode::TOO_MANY_REQUESTS {
        HealthStatus::Warning
    } else {
        HealthStatus::Critical
    }
}

/// `200 OK`, as Go's `Response.Status` reads.
fn status_line(code: StatusCode) -> String {
    match code.canonical_reason() {
        Some(reason) => format!("{} {reason}", code.as_str()),
        None => code.as_str().to_owned(),
    }
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("invalid method {0:?}")]
    Method(String),
    #[error("invalid URL")]
    Url(#[from] url::ParseError),
    #[error("unsupported URL scheme {0:?}")]
    Scheme(String),
    #[error("URL has no host")]
    NoHost,
    #[error("invalid header name {name:?}")]
    HeaderName {
        name: String,
        #[source]
        source: InvalidHeaderName,
    },
    #[error("invalid value for header {name:?}")]
    HeaderValue {
        name: String,
        #[source]
        source: InvalidHeaderValue,
    },
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("building the request")]
    Request(#[from] hyper::http::Error),
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error("invalid redirect location {location:?}")]
    Location {
        location: String,
        #[source]
        source: url::ParseError,
    },
    #[error("redirect location is not valid text")]
    LocationText(#[from] header::ToStrError),
    #[error("stopped after {MAX_REQUESTS} redirects")]
    TooManyRedirects,
}

/// The final response: its status and the start of its body.
struct Reply {
    status: StatusCode,
    body: String,
}

/// The request as it stands for the current hop of a redirect chain.
struct Hop {
    method: Method,
    url: Url,
    headers: HeaderMap,
    /// A `Host` header given by the probe, kept while redirects stay relative (as Go does).
    host: Option<HeaderValue>,
    body: Bytes,
}

async fn fetch(probe: &HttpProbe) -> Result<Reply, FetchError> {
    let method = probe.method();
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| FetchError::Method(method.to_owned()))?;
    let (headers, host) = request_headers(&probe.headers)?;
    let mut hop = Hop {
        method,
        url: Url::parse(&probe.url)?,
        headers,
        host,
        body: probe.body.clone().map(Bytes::from).unwrap_or_default(),
    };
    let mut requests = 0;
    loop {
        requests += 1;
        let exchange = send(&hop, probe).await?;
        let status = exchange.response.status();
        let location = match exchange.response.headers().get(header::LOCATION) {
            Some(location) if is_followed_redirect(status) && !probe.disable_redirects => location.to_str()?.to_owned(),
            _ => return Ok(Reply { status, body: exchange.read_body().await }),
        };
        if requests == MAX_REQUESTS {
            return Err(FetchError::TooManyRedirects);
        }
        hop.redirect(status, &location)?;
    }
}

/// The redirects Go's client follows; any other 3xx (300, 304, ...) is the final answer.
fn is_followed_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

impl Hop {
    /// Turns this hop into the next one, for a `status` response pointing at `location`.
    fn redirect(&mut self, status: StatusCode, location: &str) -> Result<(), FetchError> {
        let next =
            self.url.join(location).map_err(|source| FetchError::Location { location: location.to_owned(), source })?;
        if matches!(status.as_u16(), 301..=303) {
            if self.method != Method::HEAD {
                self.method = Method::GET;
            }
            self.body = Bytes::new();
            self.headers.remove(header::CONTENT_TYPE);
            self.headers.remove(header::CONTENT_LENGTH);
        }
        if next.host() != self.url.host() {
            for credential in [header::AUTHORIZATION, header::COOKIE, header::PROXY_AUTHORIZATION] {
                self.headers.remove(credential);
            }
        }
        if Url::parse(location).is_ok() {
            self.host = None;
        }
        self.url = next;
        Ok(())
    }
}

/// The probe's headers, with the defaults filled in; a `Host` header is returned apart.
fn request_headers(given: &BTreeMap<String, Vec<String>>) -> Result<(HeaderMap, Option<HeaderValue>), FetchError> {
    let mut headers = HeaderMap::new();
    for (name, values) in given {
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|source| FetchError::HeaderName { name: name.clone(), source })?;
        for value in values {
            let value = HeaderValue::from_str(value)
                .map_err(|source| FetchError::HeaderValue { name: name.clone(), source })?;
            headers.append(header_name.clone(), value);
        }
    }
    let host = headers.remove(header::HOST);
    headers.entry(header::USER_AGENT).or_insert(HeaderValue::from_static(USER_AGENT));
    headers.entry(header::ACCEPT).or_insert(HeaderValue::from_static(ACCEPT));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    Ok((headers, host))
}

/// A response, and the task driving its connection (aborted, closing the socket, on drop).
struct Exchange {
    response: Response<Incoming>,
    _connection: AbortOnDrop,
}

impl Exchange {
    /// The first [`MAX_OUTPUT_BYTES`] of the body. A body that breaks off is reported as far as
    /// it got: the status code already decided the check.
    async fn read_body(self) -> String {
        let mut head = Head::new(MAX_OUTPUT_BYTES);
        let mut body = self.response.into_body();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Some(data) = frame.data_ref() {
                        if !head.push(data) {
                            break;
                        }
                    }
                }
                Err(err) => {
                    tracing::debug!(error = %err, "HTTP check: reading the response body failed");
                    break;
                }
            }
        }
        head.into_string()
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn send(hop: &Hop, probe: &HttpProbe) -> Result<Exchange, FetchError> {
    let host = match hop.url.host() {
        Some(Host::Domain(domain)) => domain.to_owned(),
        Some(Host::Ipv4(address)) => address.to_string(),
        Some(Host::Ipv6(address)) => address.to_string(),
        None => return Err(FetchError::NoHost),
    };
    let tls = match hop.url.scheme() {
        "http" => None,
        "https" => Some(Tls {
            server_name: probe.tls_server_name.clone().unwrap_or_else(|| host.clone()),
            skip_verify: probe.tls_skip_verify,
        }),
        other => return Err(FetchError::Scheme(other.to_owned())),
    };
    // Both schemes have a default port, so this only fails on a URL `Url` would not produce.
    let port = hop.url.port_or_known_default().ok_or(FetchError::NoHost)?;

    let io = transport::connect(&host, port, tls.as_ref(), Alpn::Http1).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let connection = AbortOnDrop(tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "HTTP check: connection error");
        }
    }));

    let mut request = Request::builder()
        .method(hop.method.clone())
        .uri(&hop.url[Position::BeforePath..Position::AfterQuery])
        .body(Full::new(hop.body.clone()))?;
    *request.headers_mut() = hop.headers.clone();
    let host_header = match &hop.host {
        Some(host) => host.clone(),
        None => {
            let authority = &hop.url[Position::BeforeHost..Position::AfterPort];
            HeaderValue::from_str(authority)
                .map_err(|source| FetchError::HeaderValue { name: header::HOST.to_string(), source })?
        }
    };
    request.headers_mut().insert(header::HOST, host_header);

    let response = sender.send_request(request).await?;
    Ok(Exchange { response, _connection: connection })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{closed_port, TestServer, TEST_TIMEOUT};

    async fn check(probe: HttpProbe) -> ProbeResult {
        run(&probe, TEST_TIMEOUT).await
    }

    #[tokio::test]
    async fn ok_is_passing_with_consul_style_output() {
        let server = TestServer::http().await;
        let url = server.url("/ok");

        let result = check(HttpProbe::get(&url)).await;

        assert_eq!(result.status, HealthStatus::Passing);
        assert_eq!(result.output, format!("HTTP GET {url}: 200 OK Output: all good"));
    }

    #[tokio::test]
    async fn too_many_requests_is_warning() {
        let server = TestServer::http().await;
        let url = server.url("/status/429");

        let result = check(HttpProbe::get(&url)).await;

        assert_eq!(result.status, HealthStatus::Warning);
        assert_eq!(result.output, format!("HTTP GET {url}: 429 Too Many Requests Output: status 429"));
    }

    #[tokio::test]
    async fn server_errors_and_other_codes_are_critical() {
        let server = TestServer::http().await;
        for code in [503, 404, 500, 418] {
            let result = check(HttpProbe::get(server.url(&format!("/status/{code}")))).await;
            assert_eq!(result.status, HealthStatus::Critical, "{code}: {}", result.output);
            assert!(result.output.contains(&format!(": {code} ")), "{}", result.output);
        }
    }

    #[tokio::test]
    async fn any_2xx_is_passing() {
        let server = TestServer::http().await;
        for code in [201, 204, 299] {
            let result = check(HttpProbe::get(server.url(&format!("/status/{code}")))).await;
            assert_eq!(result.status, HealthStatus::Passing, "{code}: {}", result.output);
        }
    }

    #[tokio::test]
    async fn slow_server_times_out_as_critical() {
        let server = TestServer::http().await;
        let url = server.url("/slow");

        let started = tokio::time::Instant::now();
        let result = run(&HttpProbe::get(&url), Duration::from_millis(200)).await;

        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
        assert_eq!(result.status, HealthStatus::Critical);
        assert_eq!(result.output, format!("HTTP GET {url}: timed out after 200ms"));
    }

    #[tokio::test]
    async fn refused_connection_is_critical() {
        let url = format!("http://{}/ok", closed_port().await);

        let result = check(HttpProbe::get(&url)).await;

        assert_eq!(result.status, HealthStatus::Critical);
        assert!(result.output.starts_with(&format!("HTTP GET {url}: dial tcp ")), "{}", result.output);
        assert!(result.output.contains("refused"), "{}", result.output);
    }

    #[tokio::test]
    async fn sends_default_headers_method_and_body() {
        let server = TestServer::http().await;
        let probe =
            HttpProbe { method: "POST".into(), body: Some("ping".into()), ..HttpProbe::get(server.url("/echo?x=1")) };

        let result = check(probe).await;

        assert_eq!(result.status, HealthStatus::Passing, "{}", result.output);
        let echoed = result.output.split_once("Output: ").map(|(_, body)| body).unwrap_or_default();
        let expected_host = server.address().to_string();
        for line in [
            "POST /echo?x=1",
            "user-agent: Weft Health Check",
            "accept: text/plain, text/*, */*",
            "connection: close",
            &format!("host: {expected_host}"),
            "body: ping",
        ] {
            assert!(echoed.lines().any(|echoed| echoed == line), "missing {line:?} in {echoed:?}");
        }
    }

    #[tokio::test]
    async fn given_headers_replace_defaults_and_host_overrides() {
        let server = TestServer::http().await;
        let headers = BTreeMap::from([
            ("User-Agent".to_owned(), vec!["probe/1".to_owned()]),
            ("Host".to_owned(), vec!["service.example".to_owned()]),
            ("X-Multi".to_owned(), vec!["a".to_owned(), "b".to_owned()]),
        ]);
        let probe = HttpProbe { headers, ..HttpProbe::get(server.url("/echo")) };

        let result = check(probe).await;

        let echoed = result.output.split_once("Output: ").map(|(_, body)| body).unwrap_or_default();
        for line in ["user-agent: probe/1", "host: service.example", "x-multi: a", "x-multi: b"] {
            assert!(echoed.lines().any(|echoed| echoed == line), "missing {line:?} in {echoed:?}");
        }
        assert!(!echoed.contains("Weft Health Check"), "{echoed}");
    }

    #[tokio::test]
    async fn body_is_cut_to_four_kib() {
        let server = TestServer::http().await;

        let result = check(HttpProbe::get(server.url("/big"))).await;

        assert_eq!(result.status, HealthStatus::Passing);
        let body = result.output.split_once("Output: ").map(|(_, body)| body).unwrap_or_default();
        assert_eq!(body.len(), MAX_OUTPUT_BYTES);
        assert!(body.bytes().all(|byte| byte == b'x'));
    }

    #[tokio::test]
    async fn follows_redirects_and_reports_the_original_url() {
        let server = TestServer::http().await;
        let url = server.url("/redirect/302?to=/ok");

        let result = check(HttpProbe::get(&url)).await;

        assert_eq!(result.status, HealthStatus::Passing, "{}", result.output);
        assert_eq!(result.output, format!("HTTP GET {url}: 200 OK Output: all good"));
    }

    #[tokio::test]
    async fn see_other_turns_a_post_into_a_get_and_307_keeps_it() {
        let server = TestServer::http().await;
        let post = |url: String| HttpProbe { method: "POST".into(), body: Some("data".into()), ..HttpProbe::get(url) };

        let result = check(post(server.url("/redirect/303?to=/echo"))).await;
        assert!(result.output.contains("Output: GET /echo\n"), "{}", result.output);
        assert!(!result.output.contains("body: data"), "{}", result.output);

        let result = check(post(server.url("/redirect/307?to=/echo"))).await;
        assert!(result.output.contains("Output: POST /echo\n"), "{}", result.output);
        assert!(result.output.contains("body: data"), "{}", result.output);
    }

    #[tokio::test]
    async fn redirect_chains_are_followed_but_loops_stop_after_ten_requests() {
        let server = TestServer::http().await;

        let chain = server.url("/redirect/302?to=%2Fredirect%2F301%3Fto%3D%252Fok");
        let result = check(HttpProbe::get(chain)).await;
        assert_eq!(result.status, HealthStatus::Passing, "{}", result.output);

        let result = check(HttpProbe::get(server.url("/loop"))).await;
        assert_eq!(result.status, HealthStatus::Critical);
        assert!(result.output.ends_with(": stopped after 10 redirects"), "{}", result.output);
        assert_eq!(server.hits("/loop"), MAX_REQUESTS);
    }

    #[tokio::test]
    async fn credentials_follow_redirects_only_on_the_same_host() {
        let server = TestServer::http().await;
        let headers = BTreeMap::from([
            ("Authorization".to_owned(), vec!["Bearer secret".to_owned()]),
            ("X-Keep".to_owned(), vec!["yes".to_owned()]),
        ]);
        let via = |to: String| {
            let to = url::form_urlencoded::byte_serialize(to.as_bytes()).collect::<String>();
            HttpProbe { headers: headers.clone(), ..HttpProbe::get(server.url(&format!("/redirect/302?to={to}"))) }
        };

        let same_host = check(via("/echo".to_owned())).await;
        assert!(same_host.output.contains("\nauthorization: Bearer secret\n"), "{}", same_host.output);

        let other_host = format!("http://localhost:{}/echo", server.address().port());
        let result = check(via(other_host)).await;
        assert_eq!(result.status, HealthStatus::Passing, "{}", result.output);
        assert!(!result.output.contains("authorization"), "{}", result.output);
        assert!(result.output.contains("\nx-keep: yes\n"), "{}", result.output);
        assert!(
            result.output.contains(&format!("\nhost: localhost:{}\n", server.address().port())),
            "{}",
            result.output
        );
    }

    #[tokio::test]
    async fn disabled_redirects_report_the_redirect() {
        let server = TestServer::http().await;
        let url = server.url("/redirect/302?to=/ok");

        let result = check(HttpProbe { disable_redirects: true, ..HttpProbe::get(&url) }).await;

        assert_eq!(result.status, HealthStatus::Critical);
        assert!(result.output.starts_with(&format!("HTTP GET {url}: 302 Found Output: ")), "{}", result.output);
    }

    #[tokio::test]
    async fn invalid_inputs_are_critical_not_panics() {
        let server = TestServer::http().await;
        let bad_header = BTreeMap::from([("Bad Header".to_owned(), vec!["x".to_owned()])]);
        let bad_value = BTreeMap::from([("X-Ok".to_owned(), vec!["line\nbreak".to_owned()])]);
        let cases = [
            (HttpProbe::get("not a url"), "invalid URL"),
            (HttpProbe::get("ftp://127.0.0.1/file"), "unsupported URL scheme \"ftp\""),
            (HttpProbe { method: "GE T".into(), ..HttpProbe::get(server.url("/ok")) }, "invalid method"),
            (HttpProbe { headers: bad_header, ..HttpProbe::get(server.url("/ok")) }, "invalid header name"),
            (HttpProbe { headers: bad_value, ..HttpProbe::get(server.url("/ok")) }, "invalid value for header"),
        ];
        for (probe, expected) in cases {
            let result = check(probe).await;
            assert_eq!(result.status, HealthStatus::Critical);
            assert!(result.output.contains(expected), "expected {expected:?} in {:?}", result.output);
        }
    }

    #[tokio::test]
    async fn https_with_skip_verify_accepts_a_self_signed_certificate() {
        let server = TestServer::https().await;
        let url = server.url("/ok");
        assert!(url.starts_with("https://"));

        let result = check(HttpProbe { tls_skip_verify: true, ..HttpProbe::get(&url) }).await;

        assert_eq!(result.status, HealthStatus::Passing, "{}", result.output);
        assert_eq!(result.output, format!("HTTP GET {url}: 200 OK Output: all good"));
    }

    #[tokio::test]
    async fn https_without_skip_verify_rejects_a_self_signed_certificate() {
        let server = TestServer::https().await;

        let result = check(HttpProbe::get(server.url("/ok"))).await;

        assert_eq!(result.status, HealthStatus::Critical);
        assert!(result.output.contains("TLS handshake with 127.0.0.1"), "{}", result.output);
        assert!(result.output.contains("invalid peer certificate"), "{}", result.output);
        assert_eq!(server.hits("/ok"), 0);
    }

    #[tokio::test]
    async fn https_sends_the_configured_server_name() {
        let server = TestServer::https().await;
        let probe = HttpProbe {
            tls_skip_verify: true,
            tls_server_name: Some("api.internal".into()),
            ..HttpProbe::get(server.url("/sni"))
        };

        let result = check(probe).await;

        assert_eq!(result.status, HealthStatus::Passing, "{}", result.output);
        assert!(result.output.ends_with("Output: api.internal"), "{}", result.output);
    }
}

//! The keys each auth method's JWTs are checked with: parsed from the
//! method's PEM, or fetched from its JWKS or OpenID discovery URL and kept
//! for [`FRESH`], fetched again sooner when a JWT names a key ID the cached
//! set lacks (the issuer rotated its keys), at most every
//! [`REFETCH_INTERVAL`]. A failed fetch falls back to the keys fetched
//! before, if any.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use weft_acl::login::{LoginError, VerifyingKeys};
use weft_api::acl::JwtKeySource;

/// How long fetched keys are used before they are fetched again.
const FRESH: Duration = Duration::from_secs(300);
/// The least time between two fetches of one URL.
const REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// Bounds on one fetch.
pub(super) const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_DOCUMENT: usize = 1024 * 1024;

#[derive(Default)]
pub(crate) struct KeyCache {
    /// By the source's URL and CA.
    fetched: Mutex<HashMap<(String, String), Fetched>>,
    /// When each source was last fetched, successfully or not: logins
    /// (which anyone may try) never make a server fetch a URL more often
    /// than every [`REFETCH_INTERVAL`].
    attempted: Mutex<HashMap<(String, String), Instant>>,
}

struct Fetched {
    keys: VerifyingKeys,
    at: Instant,
}

impl KeyCache {
    /// The keys to check a JWT naming `kid` with.
    pub(crate) async fn keys(&self, source: &JwtKeySource, kid: Option<&str>) -> Result<VerifyingKeys, LoginError> {
        let (url, ca, discovery) = match source {
            JwtKeySource::Static(pems) => {
                return VerifyingKeys::from_pems(pems).map_err(LoginError::KeysUnavailable);
            }
            JwtKeySource::Jwks { url, ca_cert } => (url, ca_cert, false),
            JwtKeySource::OidcDiscovery { url, ca_cert } => (url, ca_cert, true),
        };
        let key = (url.clone(), ca.clone());
        let stale = {
            let fetched = self.fetched.lock().unwrap_or_else(|p| p.into_inner());
            match fetched.get(&key) {
                Some(entry) => {
                    let age = entry.at.elapsed();
                    let missing_kid = kid.is_some_and(|kid| !entry.keys.has_kid(kid));
                    if age < FRESH && !(missing_kid && age >= REFETCH_INTERVAL) {
                        return Ok(entry.keys.clone());
                    }
                    Some(entry.keys.clone())
                }
                None => None,
            }
        };
        {
            let mut attempted = self.attempted.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(at) = attempted.get(&key).filter(|at| at.elapsed() < REFETCH_INTERVAL) {
                return stale.ok_or_else(|| {
                    LoginError::KeysUnavailable(format!(
                        "the last fetch of {url} failed {:.1?} ago; the next may start after {REFETCH_INTERVAL:?}",
                        at.elapsed()
                    ))
                });
            }
            attempted.insert(key.clone(), Instant::now());
        }
        match fetch_keys(url, ca, discovery).await {
            Ok(keys) => {
                tracing::info!(url, keys = keys.len(), "fetched an auth method's signing keys");
                let mut fetched = self.fetched.lock().unwrap_or_else(|p| p.into_inner());
                fetched.insert(key, Fetched { keys: keys.clone(), at: Instant::now() });
                Ok(keys)
            }
            Err(error) => match stale {
                Some(keys) => {
                    tracing::warn!(url, %error, "could not fetch an auth method's keys again; using the ones fetched before");
                    Ok(keys)
                }
                None => {
                    tracing::warn!(url, %error, "could not fetch an auth method's keys");
                    Err(LoginError::KeysUnavailable(error))
                }
            },
        }
    }
}

async fn fetch_keys(url: &str, ca: &str, discovery: bool) -> Result<VerifyingKeys, String> {
    let jwks_url = match discovery {
        false => url.to_owned(),
        true => {
            let well_known = format!("{}/.well-known/openid-configuration", url.trim_end_matches('/'));
            let document: serde_json::Value = serde_json::from_slice(&get(&well_known, ca).await?)
                .map_err(|e| format!("the discovery document at {well_known} is not JSON: {e}"))?;
            document
                .get("jwks_uri")
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| format!("the discovery document at {well_known} names no jwks_uri"))?
                .to_owned()
        }
    };
    VerifyingKeys::from_jwks(&get(&jwks_url, ca).await?).map_err(|e| format!("{jwks_url}: {e}"))
}

/// GETs `url` (http or https, trusting `ca` or the system's roots): its
/// body, at most [`MAX_DOCUMENT`] bytes, within [`FETCH_TIMEOUT`].
async fn get(url: &str, ca: &str) -> Result<Vec<u8>, String> {
    tokio::time::timeout(FETCH_TIMEOUT, get_once(url, ca))
        .await
        .unwrap_or_else(|_| Err(format!("GET {url}: no answer within {FETCH_TIMEOUT:?}")))
}

async fn get_once(url: &str, ca: &str) -> Result<Vec<u8>, String> {
    let failed = |what: &dyn std::fmt::Display| format!("GET {url}: {what}");
    let uri: hyper::Uri = url.parse().map_err(|e| failed(&e))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(failed(&"not an http:// or https:// URL")),
    };
    let authority = uri.authority().ok_or_else(|| failed(&"no host"))?.clone();
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let request = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| failed(&e))?;
    let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(|e| failed(&e))?;
    if !https {
        return send(tcp, request).await.map_err(|e| failed(&e));
    }
    let config = weft_tls::web_client_config(ca).map_err(|e| failed(&e))?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host).map_err(|e| failed(&e))?;
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| failed(&e))?;
    send(tls, request).await.map_err(|e| failed(&e))
}

async fn send<Io>(io: Io, request: hyper::Request<Empty<Bytes>>) -> Result<Vec<u8>, String>
where
    Io: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_DOCUMENT)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    Ok(body.to_bytes().to_vec())
}

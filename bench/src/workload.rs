//! What one benchmark write is for each target: the request `kv-load` sends
//! and how it decides whether the write succeeded. Kept apart from the load
//! loop so that adding a target touches only this file.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use clap::ValueEnum;
use hyper::Method;
use weft_api::client::{kv_path, Response};

/// The system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Weft's Consul-compatible HTTP API: `PUT /v1/kv/<key>`.
    Weft,
    /// etcd v3's JSON gRPC gateway: `POST /v3/kv/put`.
    Etcd,
}

/// One request, ready to send.
pub struct WriteRequest {
    pub method: Method,
    pub path: String,
    pub body: Vec<u8>,
}

/// Why a write that got an HTTP response did not count as a success.
#[derive(Debug)]
pub struct Rejection {
    /// A short, stable label used to count errors by kind (`http_500`, `bad_body`).
    pub kind: String,
    /// What the server said, for the first error shown to the user.
    pub detail: String,
}

/// The writes of one benchmark run: a target and the value every key gets.
pub struct Workload {
    target: Target,
    value: Vec<u8>,
    /// The value, base64-encoded once (etcd's gateway wants base64 bytes).
    value_b64: String,
}

impl Workload {
    pub fn new(target: Target, value_size: usize) -> Self {
        let value = make_value(value_size);
        let value_b64 = BASE64.encode(&value);
        Self { target, value, value_b64 }
    }

    pub fn target(&self) -> Target {
        self.target
    }

    /// The request that writes this run's value under `key`.
    pub fn request(&self, key: &str) -> WriteRequest {
        match self.target {
            Target::Weft => WriteRequest { method: Method::PUT, path: kv_path(key), body: self.value.clone() },
            Target::Etcd => WriteRequest {
                method: Method::POST,
                path: "/v3/kv/put".to_owned(),
                // Both fields are base64 (only `A-Za-z0-9+/=`), so no JSON
                // escaping is needed and formatting directly is safe.
                body: format!(r#"{{"key":"{}","value":"{}"}}"#, BASE64.encode(key), self.value_b64).into_bytes(),
            },
        }
    }

    /// Whether `response` acknowledges the write.
    ///
    /// Weft answers a successful KV PUT with `200` and the body `true` (as
    /// Consul does); etcd's gateway answers `200` with a JSON header.
    pub fn check(&self, response: &Response) -> Result<(), Rejection> {
        if response.status != 200 {
            return Err(Rejection {
                kind: format!("http_{}", response.status),
                detail: format!("HTTP {}: {}", response.status, snippet(&response.text())),
            });
        }
        match self.target {
            Target::Weft if response.text().trim() != "true" => Err(Rejection {
                kind: "bad_body".to_owned(),
                detail: format!("HTTP 200 but body {:?} (expected `true`)", snippet(&response.text())),
            }),
            Target::Weft | Target::Etcd => Ok(()),
        }
    }
}

/// A deterministic, printable value of `size` bytes (so it reads well in
/// dumps and is the same on every run).
fn make_value(size: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..size).map(|i| ALPHABET[(i * 7 + i / ALPHABET.len()) % ALPHABET.len()]).collect()
}

/// The first 200 characters of a response body, on one line.
fn snippet(text: &str) -> String {
    let one_line: String = text.trim().chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match one_line.char_indices().nth(200) {
        Some((cut, _)) => format!("{}...", &one_line[..cut]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::HeaderMap;

    fn response(status: u16, body: &str) -> Response {
        Response { status, headers: HeaderMap::new(), body: body.as_bytes().to_vec() }
    }

    #[test]
    fn weft_put_is_raw_value_under_v1_kv() {
        let workload = Workload::new(Target::Weft, 16);
        let request = workload.request("bench/3/7");
        assert_eq!(request.method, Method::PUT);
        assert_eq!(request.path, "/v1/kv/bench/3/7");
        assert_eq!(request.body.len(), 16);
    }

    #[test]
    fn etcd_put_is_base64_json() {
        let workload = Workload::new(Target::Etcd, 4);
        let request = workload.request("k");
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.path, "/v3/kv/put");
        let body: serde_json::Value = serde_json::from_slice(&request.body).expect("valid JSON");
        assert_eq!(body["key"], "aw==");
        assert_eq!(body["value"], BASE64.encode(make_value(4)));
    }

    #[test]
    fn weft_success_needs_true_body() {
        let workload = Workload::new(Target::Weft, 1);
        assert!(workload.check(&response(200, "true\n")).is_ok());
        assert_eq!(workload.check(&response(200, "false")).map_err(|r| r.kind).unwrap_err(), "bad_body");
        assert_eq!(workload.check(&response(500, "no leader")).map_err(|r| r.kind).unwrap_err(), "http_500");
    }

    #[test]
    fn etcd_success_is_status_200() {
        let workload = Workload::new(Target::Etcd, 1);
        assert!(workload.check(&response(200, r#"{"header":{}}"#)).is_ok());
        assert!(workload.check(&response(503, "")).is_err());
    }
}

//! The `admission.k8s.io/v1` `AdmissionReview`: what the API server sends a
//! webhook, and what it expects back.
//!
//! Only the fields the webhook reads are typed; the object under review stays
//! JSON until [`crate::pod`] reads the few fields of a pod it needs. This is
//! the one module that knows the envelope's shape.
//!
//! The response has no way to refuse: [`AdmissionResponse`] is always
//! `allowed: true`, because the webhook never blocks a pod.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The only `apiVersion` this webhook speaks (the configuration asks for it
/// with `admissionReviewVersions: ["v1"]`).
pub const API_VERSION: &str = "admission.k8s.io/v1";
/// The `kind` of both the request and the response.
pub const KIND: &str = "AdmissionReview";

/// A body that is not an `admission.k8s.io/v1` review; answered with a 400.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("the body is not a JSON AdmissionReview: {0}")]
    NotAReview(serde_json::Error),
    #[error("apiVersion is {found:?}; this webhook speaks {API_VERSION} only")]
    WrongApiVersion { found: String },
    #[error("kind is {found:?}; expected {KIND}")]
    WrongKind { found: String },
    #[error("the AdmissionReview carries no request")]
    NoRequest,
    #[error("the AdmissionReview's request is malformed: {0}")]
    MalformedRequest(serde_json::Error),
}

/// The API server's ID for one review; the response must carry it back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestUid(pub String);

/// The part of `request` the webhook reads.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: RequestUid,
    /// The kind of the object under review (`{"group": "", "version": "v1", "kind": "Pod"}`).
    pub kind: GroupVersionKind,
    /// Set when a subresource (`pods/ephemeralcontainers`, ...) is under review.
    #[serde(default)]
    pub sub_resource: Option<String>,
    /// Empty when the object has only a `generateName` (a Deployment's pods).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: Operation,
    /// The object as it will be created; absent for deletes.
    #[serde(default)]
    pub object: Option<Value>,
}

/// An API group, version and kind.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    pub version: String,
    pub kind: String,
}

/// The operation under review.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
    /// Anything a newer API server may send.
    #[serde(other)]
    Other,
}

/// The webhook's answer to one request: always allowed, perhaps with a patch
/// and warnings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    pub uid: RequestUid,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<PatchType>,
    /// The JSON Patch, base64 (standard alphabet, padded) as the API expects.
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    /// Shown by `kubectl` as `Warning: ...`; the API suggests 120 characters at most.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The only patch type `admission.k8s.io/v1` defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum PatchType {
    JSONPatch,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseEnvelope<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: &'a AdmissionResponse,
}

/// Reads an `AdmissionReview` body: an `admission.k8s.io/v1` review with a request.
pub fn parse_review(body: &[u8]) -> Result<AdmissionRequest, ReviewError> {
    // A map first: serde would read a struct from a JSON list too.
    let mut envelope: Map<String, Value> = serde_json::from_slice(body).map_err(ReviewError::NotAReview)?;
    let field = |name: &str| envelope.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    if api_version != API_VERSION {
        return Err(ReviewError::WrongApiVersion { found: api_version });
    }
    if kind != KIND {
        return Err(ReviewError::WrongKind { found: kind });
    }
    match envelope.remove("request") {
        None | Some(Value::Null) => Err(ReviewError::NoRequest),
        Some(request) => serde_json::from_value(request).map_err(ReviewError::MalformedRequest),
    }
}

impl GroupVersionKind {
    /// Whether this is the core `v1` `Pod`.
    pub fn is_pod(&self) -> bool {
        self.group.is_empty() && self.version == "v1" && self.kind == "Pod"
    }
}

impl AdmissionRequest {
    /// The object's name for logs: its name, else its `generateName`
    /// followed by `*`, else `<unnamed>`.
    pub fn object_display_name(&self) -> String {
        let metadata = |field: &str| {
            let value = self.object.as_ref()?.get("metadata")?.get(field)?.as_str()?;
            Some(value).filter(|value| !value.is_empty())
        };
        match (self.name.as_deref().filter(|name| !name.is_empty()).or(metadata("name")), metadata("generateName")) {
            (Some(name), _) => name.to_owned(),
            (None, Some(prefix)) => format!("{prefix}*"),
            (None, None) => "<unnamed>".to_owned(),
        }
    }
}

impl AdmissionResponse {
    /// Admits the object unchanged.
    pub fn allow(uid: RequestUid) -> Self {
        AdmissionResponse { uid, allowed: true, patch_type: None, patch: None, warnings: Vec::new() }
    }

    /// Admits the object with `patch` (a serialized JSON Patch) applied.
    pub fn allow_patched(uid: RequestUid, patch: &[u8]) -> Self {
        AdmissionResponse {
            patch_type: Some(PatchType::JSONPatch),
            patch: Some(base64::engine::general_purpose::STANDARD.encode(patch)),
            ..AdmissionResponse::allow(uid)
        }
    }

    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings = warnings;
        self
    }

    pub fn allowed(&self) -> bool {
        self.allowed
    }

    /// The JSON Patch, decoded.
    pub fn patch(&self) -> Option<Vec<u8>> {
        self.patch.as_ref().and_then(|patch| base64::engine::general_purpose::STANDARD.decode(patch).ok())
    }

    /// The whole `AdmissionReview` the API server expects back.
    pub fn to_review(&self) -> Value {
        let envelope = ResponseEnvelope { api_version: API_VERSION, kind: KIND, response: self };
        serde_json::to_value(envelope).expect("an AdmissionReview response serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(value: Value) -> Vec<u8> {
        serde_json::to_vec(&value).unwrap()
    }

    fn pod_review() -> Value {
        json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop",
                "operation": "CREATE",
                "object": {"metadata": {"generateName": "web-"}, "spec": {"containers": []}},
                "dryRun": false
            }
        })
    }

    #[test]
    fn reads_a_v1_review() {
        let request = parse_review(&body(pod_review())).unwrap();
        assert_eq!(request.uid, RequestUid("705ab4f5-6393-11e8-b7cc-42010a800002".into()));
        assert!(request.kind.is_pod());
        assert_eq!(request.operation, Operation::Create);
        assert_eq!(request.namespace.as_deref(), Some("shop"));
        assert_eq!(request.name, None);
        assert_eq!(request.object_display_name(), "web-*");
    }

    #[test]
    fn refuses_other_versions_kinds_and_empty_reviews() {
        let mut review = pod_review();
        review["apiVersion"] = json!("admission.k8s.io/v1beta1");
        let error = parse_review(&body(review)).unwrap_err();
        assert!(matches!(error, ReviewError::WrongApiVersion { ref found } if found == "admission.k8s.io/v1beta1"));
        assert!(error.to_string().contains("admission.k8s.io/v1 only"), "{error}");

        let mut review = pod_review();
        review["kind"] = json!("ConversionReview");
        assert!(matches!(parse_review(&body(review)), Err(ReviewError::WrongKind { .. })));

        let mut review = pod_review();
        review["request"] = Value::Null;
        assert!(matches!(parse_review(&body(review)), Err(ReviewError::NoRequest)));

        let mut review = pod_review();
        review["request"]["uid"] = json!(7);
        assert!(matches!(parse_review(&body(review)), Err(ReviewError::MalformedRequest(_))));

        assert!(matches!(parse_review(b"{\"apiVersion\": "), Err(ReviewError::NotAReview(_))));
        assert!(matches!(parse_review(b"[]"), Err(ReviewError::NotAReview(_))));
    }

    #[test]
    fn an_unknown_operation_is_other() {
        let mut review = pod_review();
        review["request"]["operation"] = json!("PATCH");
        assert_eq!(parse_review(&body(review)).unwrap().operation, Operation::Other);
    }

    #[test]
    fn responses_are_allowed_and_carry_the_uid() {
        let uid = RequestUid("u1".into());
        let plain = AdmissionResponse::allow(uid.clone()).to_review();
        assert_eq!(plain, json!({"apiVersion": API_VERSION, "kind": KIND, "response": {"uid": "u1", "allowed": true}}));

        let patched = AdmissionResponse::allow_patched(uid, b"[]").with_warnings(vec!["careful".into()]).to_review();
        assert_eq!(patched["response"]["allowed"], json!(true));
        assert_eq!(patched["response"]["patchType"], json!("JSONPatch"));
        assert_eq!(patched["response"]["patch"], json!("W10="));
        assert_eq!(patched["response"]["warnings"], json!(["careful"]));
    }
}

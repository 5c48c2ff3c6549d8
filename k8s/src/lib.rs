//! Weft on Kubernetes: the sidecar-injection webhook.
//!
//! The API server sends every pod it is about to create in a selected
//! namespace to this webhook (a `MutatingWebhookConfiguration`). The webhook
//! answers with a JSON Patch that adds the Weft agent and its proxy to the
//! pod as a native sidecar (an init container with `restartPolicy: Always`,
//! Kubernetes 1.29 or newer): it starts, and passes its startup probe, before
//! the application's containers start, and stops after they have stopped.
//! With transparent proxying, a `weft-init` container first redirects the
//! pod's traffic through the proxy.
//!
//! The webhook never refuses a pod: a pod whose Weft annotations are wrong is
//! admitted unchanged, with a warning `kubectl` shows and a log line. A pod
//! that cannot start its sidecar would crash-loop; one without it merely runs
//! outside the mesh.
//!
//! # Which pods are injected
//! The namespace opt-in (`weft.io/inject=enabled`) is not decided here: an
//! `AdmissionReview` does not carry the namespace's labels, so the webhook
//! configuration's `namespaceSelector` decides which pods are sent at all.
//! Of the pods it is sent, the webhook injects those annotated
//! `weft.io/connect-inject: "true"`, and every other one when
//! [`InjectConfig::inject_by_default`] is set, except pods annotated
//! `"false"`, pods already injected and `hostNetwork` pods.
//!
//! # Layout
//! - [`inject`]: the decision, pure: an admission request and an
//!   [`InjectConfig`] in, a [`Decision`] and an admission response out.
//! - [`wiring`]: what the sidecar is told about its service (name, port,
//!   upstreams, transparent proxying), read from the pod and its annotations.
//! - [`annotations`]: the annotation names and the parsers of their values.
//! - [`sidecar`]: the containers and volume the patch adds, and the ports and
//!   user they assume of the agent's Kubernetes mode.
//! - [`redirect`]: the iptables rules of transparent proxying (`weft k8s
//!   redirect-traffic`, run by the `weft-init` container).
//! - [`patch`]: RFC 6902 JSON Patch operations and RFC 6901 pointers.
//! - [`pod`]: the few fields of a pod the webhook reads.
//! - [`pod_env`]: the other end: what `weft agent --k8s` reads from the
//!   environment the injected container is given.
//! - [`admission`]: the `admission.k8s.io/v1` `AdmissionReview` wire format.
//! - [`webhook`]: the HTTPS server (`POST /mutate`, `GET /health`).
//! - `tls`: the server's rustls configuration from PEM files.
//!
//! **Architecture Invariant:** nothing here talks to the Kubernetes API or to
//! Weft's servers; the webhook answers from the request alone, so it cannot
//! be slowed or broken by either.
#![forbid(unsafe_code)]

pub mod admission;
pub mod annotations;
pub mod inject;
pub mod patch;
pub mod pod;
pub mod pod_env;
pub mod redirect;
pub mod sidecar;
mod tls;
pub mod webhook;
pub mod wiring;

pub use inject::{decide, Decision, InjectConfig, InjectConfigError, SkipReason};
pub use tls::TlsError;
pub use webhook::{run, WebhookConfig, WebhookError};

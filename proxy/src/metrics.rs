//! What a sidecar counts, served on its admin port at `/metrics` in
//! Prometheus' text format: connections, bytes, requests by status code,
//! request latency, intention denials, and when its leaf expires.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Which side of the sidecar: from other sidecars, or from the application
/// to an upstream.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Direction {
    Inbound,
    Outbound,
}

/// How a connection ended up.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Outcome {
    /// Served (allowed, or sent on to an upstream).
    Served,
    /// Refused by an intention.
    Denied,
    /// Failed: handshake, no healthy endpoint, connect error.
    Failed,
}

/// Where an intention refused traffic.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Layer {
    /// A whole connection.
    L4,
    /// One HTTP request.
    L7,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub direction: Direction,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: Direction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub direction: Direction,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LayerLabels {
    pub layer: Layer,
}

/// Every metric of one sidecar. Cheap to clone (the families share state).
#[derive(Clone)]
pub struct Metrics {
    pub connections: Family<ConnectionLabels, Counter>,
    pub open_connections: Family<DirectionLabels, Gauge>,
    /// Bytes received from the connection's initiator.
    pub bytes_received: Family<DirectionLabels, Counter>,
    /// Bytes sent back to the connection's initiator.
    pub bytes_sent: Family<DirectionLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<DirectionLabels, Histogram>,
    pub intention_denials: Family<LayerLabels, Counter>,
    /// Seconds since the Unix epoch after which the leaf is invalid.
    pub leaf_expiry: Gauge,
    /// Inbound connections let in without mutual TLS (permissive mode).
    pub plaintext_connections: Counter,
    /// Inbound requests refused by the local rate limit.
    pub rate_limited: Counter,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

impl Metrics {
    /// New metrics, registered in `registry` under `weft_proxy_`.
    pub fn new(registry: &mut Registry) -> Metrics {
        let metrics = Metrics {
            connections: Family::default(),
            open_connections: Family::default(),
            bytes_received: Family::default(),
            bytes_sent: Family::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            intention_denials: Family::default(),
            leaf_expiry: Gauge::default(),
            plaintext_connections: Counter::default(),
            rate_limited: Counter::default(),
        };
        let registry = registry.sub_registry_with_prefix("weft_proxy");
        registry.register("connections", "Connections handled, by outcome", metrics.connections.clone());
        registry.register("open_connections", "Connections open now", metrics.open_connections.clone());
        registry.register("received_bytes", "Bytes received from callers", metrics.bytes_received.clone());
        registry.register("sent_bytes", "Bytes sent back to callers", metrics.bytes_sent.clone());
        registry.register("requests", "HTTP requests, by response status", metrics.requests.clone());
        registry.register("request_duration_seconds", "HTTP request latency", metrics.request_seconds.clone());
        registry.register("intention_denials", "Traffic refused by intentions", metrics.intention_denials.clone());
        registry.register(
            "inbound_plaintext_connections",
            "Inbound connections accepted without mutual TLS (MutualTLSMode permissive)",
            metrics.plaintext_connections.clone(),
        );
        registry.register("rate_limited_requests", "Inbound requests refused with 429", metrics.rate_limited.clone());
        registry.register(
            "leaf_expiry_timestamp_seconds",
            "When the sidecar's leaf certificate expires (Unix time)",
            metrics.leaf_expiry.clone(),
        );
        metrics
    }

    pub fn connection(&self, direction: Direction, outcome: Outcome) {
        self.connections.get_or_create(&ConnectionLabels { direction, outcome }).inc();
    }

    pub fn denied(&self, layer: Layer) {
        self.intention_denials.get_or_create(&LayerLabels { layer }).inc();
    }

    /// Counts a connection as open until the guard is dropped.
    pub fn open(&self, direction: Direction) -> OpenConnection {
        let gauge = self.open_connections.get_or_create(&DirectionLabels { direction }).clone();
        gauge.inc();
        OpenConnection(gauge)
    }

    pub fn bytes(&self, direction: Direction, received: u64, sent: u64) {
        self.bytes_received.get_or_create(&DirectionLabels { direction }).inc_by(received);
        self.bytes_sent.get_or_create(&DirectionLabels { direction }).inc_by(sent);
    }

    pub fn request(&self, direction: Direction, code: u16, seconds: f64) {
        self.requests.get_or_create(&RequestLabels { direction, code }).inc();
        self.request_seconds.get_or_create(&DirectionLabels { direction }).observe(seconds);
    }
}

/// An open connection, counted in `weft_proxy_open_connections`.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

//! Choosing an upstream's endpoint for each connection (TCP) or request
//! (HTTP): round robin, least request by the power of two choices (the
//! less busy of two endpoints picked at random, which avoids the herd a
//! global "least busy" makes), or consistent hashing of a key taken from
//! the request. The chosen endpoint is tried first, then the others, so
//! one dead instance costs a retry, not an error.
//!
//! Consul's `ring_hash` and `maglev` are both served by rendezvous
//! (highest random weight) hashing: each endpoint's weight for a key is a
//! hash of the two, and endpoints are tried heaviest first. It keeps the
//! property users pick those policies for (a key stays on its endpoint,
//! and only the keys of an endpoint that comes or goes move) without a
//! ring to build and rebuild, at O(endpoints) per request.
//!
//! Outlier detection (Consul's `PassiveHealthCheck`) lives here too: an
//! endpoint that fails `MaxFailures` times in a row (a 5xx or a failed
//! connection) is left out for `BaseEjectionTime` (longer each time it is
//! ejected again), with at most `MaxEjectionPercent` of the endpoints out
//! at once (but always one may go, as in Envoy), and never all of them.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rand::Rng;
use tokio::time::Instant;
use weft_api::proxy::{HashPolicy, HashSource, LoadBalancer, OutlierDetection};

/// An endpoint's weight for `key` (rendezvous hashing). The hasher has
/// fixed keys, so every sidecar ranks the same way.
fn weight(key: u64, endpoint: &SocketAddr) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    (key, endpoint).hash(&mut hasher);
    hasher.finish()
}

/// The hash key of a request by `policies` (every policy that finds a
/// value adds to it, up to a terminal one that does); `None` if none
/// found anything.
pub fn request_key<B>(policies: &[HashPolicy], request: &hyper::Request<B>, source: Option<SocketAddr>) -> Option<u64> {
    let mut hasher = std::hash::DefaultHasher::new();
    let mut found = false;
    for policy in policies {
        let value: Option<String> = match &policy.source {
            HashSource::Header(name) => {
                let values: Vec<&str> =
                    request.headers().get_all(name.as_str()).iter().filter_map(|v| v.to_str().ok()).collect();
                (!values.is_empty()).then(|| values.join(","))
            }
            HashSource::Cookie(name) => request
                .headers()
                .get_all(hyper::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.to_owned()),
            HashSource::QueryParameter(name) => request
                .uri()
                .query()
                .into_iter()
                .flat_map(|query| query.split('&'))
                .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.to_owned()),
            HashSource::SourceIp => source.map(|address| address.ip().to_string()),
        };
        if let Some(value) = value {
            value.hash(&mut hasher);
            found = true;
            if policy.terminal {
                break;
            }
        }
    }
    found.then(|| hasher.finish())
}

/// The hash key of a TCP connection from `source`: only `SourceIP`
/// policies can say anything about it.
pub fn connection_key(policy: &LoadBalancer, source: SocketAddr) -> Option<u64> {
    let LoadBalancer::ConsistentHash(policies) = policy else { return None };
    policies.iter().any(|p| p.source == HashSource::SourceIp).then(|| {
        let mut hasher = std::hash::DefaultHasher::new();
        source.ip().to_string().hash(&mut hasher);
        hasher.finish()
    })
}

/// One upstream's balancer: its round-robin position, what is in flight
/// to each endpoint, and each endpoint's record of failures.
#[derive(Default)]
pub struct Balancer {
    next: AtomicUsize,
    in_flight: Mutex<HashMap<SocketAddr, Arc<AtomicUsize>>>,
    outliers: Mutex<HashMap<SocketAddr, OutlierState>>,
}

#[derive(Default)]
struct OutlierState {
    consecutive_failures: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
}

/// Work in flight to one endpoint; counted until dropped.
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Balancer {
    /// `endpoints` in the order to try them, ejected ones left out (unless
    /// every one is ejected).
    pub fn order(&self, endpoints: &[SocketAddr], policy: &LoadBalancer, key: Option<u64>) -> Vec<SocketAddr> {
        let available: Vec<SocketAddr> = {
            let outliers = self.outliers.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let ejected = |e: &SocketAddr| outliers.get(e).and_then(|o| o.ejected_until).is_some_and(|t| t > now);
            endpoints.iter().copied().filter(|e| !ejected(e)).collect()
        };
        let endpoints = if available.is_empty() { endpoints } else { &available };
        if endpoints.is_empty() {
            return Vec::new();
        }
        let first = match (policy, key) {
            (LoadBalancer::ConsistentHash(_), Some(key)) => {
                let mut ranked = endpoints.to_vec();
                ranked.sort_by_key(|endpoint| std::cmp::Reverse(weight(key, endpoint)));
                return ranked;
            }
            (LoadBalancer::RoundRobin | LoadBalancer::ConsistentHash(_), _) => {
                self.next.fetch_add(1, Ordering::Relaxed) % endpoints.len()
            }
            (LoadBalancer::LeastRequest, _) => self.less_busy_of_two(endpoints),
        };
        (0..endpoints.len()).map(|i| endpoints[(first + i) % endpoints.len()]).collect()
    }

    fn less_busy_of_two(&self, endpoints: &[SocketAddr]) -> usize {
        if endpoints.len() == 1 {
            return 0;
        }
        let mut rng = rand::thread_rng();
        let a = rng.gen_range(0..endpoints.len());
        let b = (a + rng.gen_range(1..endpoints.len())) % endpoints.len();
        if self.load(endpoints[b]) < self.load(endpoints[a]) {
            b
        } else {
            a
        }
    }

    fn counter(&self, endpoint: SocketAddr) -> Arc<AtomicUsize> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        in_flight.entry(endpoint).or_default().clone()
    }

    fn load(&self, endpoint: SocketAddr) -> usize {
        self.counter(endpoint).load(Ordering::Relaxed)
    }

    /// Counts work to `endpoint` as in flight until the guard drops.
    pub fn start(&self, endpoint: SocketAddr) -> InFlight {
        let counter = self.counter(endpoint);
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter)
    }

    /// Records how an exchange with `endpoint` went, and ejects it if it
    /// keeps failing (see the module docs). `endpoints` counts toward the
    /// share that may be out at once.
    pub fn record(&self, endpoint: SocketAddr, failed: bool, policy: Option<&OutlierDetection>, endpoints: usize) {
        let Some(policy) = policy else { return };
        let mut outliers = self.outliers.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let ejected_now = outliers.values().filter(|o| o.ejected_until.is_some_and(|t| t > now)).count();
        let state = outliers.entry(endpoint).or_default();
        if !failed {
            state.consecutive_failures = 0;
            return;
        }
        state.consecutive_failures += 1;
        let already_out = state.ejected_until.is_some_and(|t| t > now);
        let may_eject = (endpoints * policy.max_ejection_percent as usize / 100).max(1);
        if state.consecutive_failures >= policy.max_failures && !already_out && ejected_now < may_eject && endpoints > 1
        {
            state.ejections += 1;
            state.consecutive_failures = 0;
            let time = std::time::Duration::from_millis(policy.base_ejection_time_ms) * state.ejections.min(10);
            state.ejected_until = Some(now + time);
            tracing::info!(%endpoint, ejected_for = ?time, "ejecting an endpoint that keeps failing");
        }
    }

    /// Forgets endpoints no longer in `current` (nothing in flight to them).
    pub fn retain(&self, current: &[SocketAddr]) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        in_flight.retain(|endpoint, count| current.contains(endpoint) || count.load(Ordering::Relaxed) > 0);
        drop(in_flight);
        self.outliers.lock().unwrap_or_else(|p| p.into_inner()).retain(|endpoint, _| current.contains(endpoint));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (0..n).map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i))).collect()
    }

    #[test]
    fn consistent_hashing_keeps_keys_on_their_endpoint_and_moves_only_a_removed_ones() {
        let balancer = Balancer::default();
        let policy = LoadBalancer::ConsistentHash(vec![HashPolicy {
            source: HashSource::Header("x-user".into()),
            terminal: false,
        }]);
        let key = |user: &str| {
            let request = hyper::Request::builder().header("X-User", user).body(()).unwrap();
            request_key(&[HashPolicy { source: HashSource::Header("x-user".into()), terminal: false }], &request, None)
        };
        assert_eq!(request_key(&[], &hyper::Request::new(()), None), None);
        let (five, four) = (addrs(5), addrs(4));
        let mut moved = 0;
        for user in (0..200).map(|i| format!("user{i}")) {
            let first = balancer.order(&five, &policy, key(&user))[0];
            assert_eq!(first, balancer.order(&five, &policy, key(&user))[0], "the same key, the same endpoint");
            let after = balancer.order(&four, &policy, key(&user))[0];
            if first == five[4] {
                moved += 1;
            } else {
                assert_eq!(first, after, "{user} stays put when another endpoint goes");
            }
        }
        assert!((20..=60).contains(&moved), "about a fifth of the keys were on the removed endpoint: {moved}");
    }

    #[test]
    fn round_robin_takes_turns_and_lists_every_endpoint() {
        let balancer = Balancer::default();
        let endpoints = addrs(3);
        let firsts: Vec<SocketAddr> =
            (0..6).map(|_| balancer.order(&endpoints, &LoadBalancer::RoundRobin, None)[0]).collect();
        assert_eq!(firsts, [endpoints.clone(), endpoints.clone()].concat());
        let mut all = balancer.order(&endpoints, &LoadBalancer::RoundRobin, None);
        all.sort();
        assert_eq!(all, endpoints);
        assert!(balancer.order(&[], &LoadBalancer::LeastRequest, None).is_empty());
    }

    #[test]
    fn an_endpoint_that_keeps_failing_is_ejected_for_a_while() {
        let balancer = Balancer::default();
        let endpoints = addrs(2);
        let policy = OutlierDetection {
            max_failures: 3,
            interval_ms: 1000,
            base_ejection_time_ms: 60_000,
            max_ejection_percent: 10,
        };
        for _ in 0..2 {
            balancer.record(endpoints[0], true, Some(&policy), 2);
        }
        assert_eq!(balancer.order(&endpoints, &LoadBalancer::RoundRobin, None).len(), 2, "two failures are not enough");
        balancer.record(endpoints[0], true, Some(&policy), 2);
        for _ in 0..4 {
            assert_eq!(balancer.order(&endpoints, &LoadBalancer::RoundRobin, None), [endpoints[1]]);
        }
        // Never all of them: the other may not be ejected while one is out (10% of 2 rounds up to 1).
        for _ in 0..5 {
            balancer.record(endpoints[1], true, Some(&policy), 2);
        }
        assert_eq!(balancer.order(&endpoints, &LoadBalancer::RoundRobin, None), [endpoints[1]]);
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let balancer = Balancer::default();
        let endpoints = addrs(2);
        let _busy: Vec<InFlight> = (0..5).map(|_| balancer.start(endpoints[0])).collect();
        for _ in 0..50 {
            assert_eq!(balancer.order(&endpoints, &LoadBalancer::LeastRequest, None)[0], endpoints[1]);
        }
        drop(_busy);
        assert_eq!(balancer.load(endpoints[0]), 0);
    }
}

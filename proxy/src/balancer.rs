//! Choosing an upstream's endpoint for each connection (TCP) or request
//! (HTTP): round robin, or least request by the power of two choices (the
//! less busy of two endpoints picked at random, which avoids the herd a
//! global "least busy" makes). The chosen endpoint is tried first, then the
//! others, so one dead instance costs a retry, not an error.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rand::Rng;
use weft_api::proxy::LoadBalancer;

/// One upstream's balancer: its round-robin position and what is in flight
/// to each endpoint.
#[derive(Default)]
pub struct Balancer {
    next: AtomicUsize,
    in_flight: Mutex<HashMap<SocketAddr, Arc<AtomicUsize>>>,
}

/// Work in flight to one endpoint; counted until dropped.
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Balancer {
    /// `endpoints` in the order to try them.
    pub fn order(&self, endpoints: &[SocketAddr], policy: LoadBalancer) -> Vec<SocketAddr> {
        if endpoints.is_empty() {
            return Vec::new();
        }
        let first = match policy {
            LoadBalancer::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % endpoints.len(),
            LoadBalancer::LeastRequest => self.less_busy_of_two(endpoints),
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

    /// Forgets endpoints no longer in `current` (nothing in flight to them).
    pub fn retain(&self, current: &[SocketAddr]) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        in_flight.retain(|endpoint, count| current.contains(endpoint) || count.load(Ordering::Relaxed) > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (0..n).map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i))).collect()
    }

    #[test]
    fn round_robin_takes_turns_and_lists_every_endpoint() {
        let balancer = Balancer::default();
        let endpoints = addrs(3);
        let firsts: Vec<SocketAddr> = (0..6).map(|_| balancer.order(&endpoints, LoadBalancer::RoundRobin)[0]).collect();
        assert_eq!(firsts, [endpoints.clone(), endpoints.clone()].concat());
        let mut all = balancer.order(&endpoints, LoadBalancer::RoundRobin);
        all.sort();
        assert_eq!(all, endpoints);
        assert!(balancer.order(&[], LoadBalancer::LeastRequest).is_empty());
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let balancer = Balancer::default();
        let endpoints = addrs(2);
        let _busy: Vec<InFlight> = (0..5).map(|_| balancer.start(endpoints[0])).collect();
        for _ in 0..50 {
            assert_eq!(balancer.order(&endpoints, LoadBalancer::LeastRequest)[0], endpoints[1]);
        }
        drop(_busy);
        assert_eq!(balancer.load(endpoints[0]), 0);
    }
}

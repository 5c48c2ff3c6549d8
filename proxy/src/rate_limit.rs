//! The local request rate limit (service-defaults' `RateLimits`): token
//! buckets in this sidecar, so a service is protected per instance without
//! any round trip. A request over the limit gets a 429 at once.
//!
//! Each route with its own limit has its own bucket; other requests share
//! the instance-level one. Buckets outlive snapshots and start over only
//! when the limits themselves change.

use std::sync::Mutex;
use std::time::Instant;

use regex::Regex;
use weft_api::intentions::{anchored_regex, PathMatch};
use weft_api::proxy::RateLimit;

/// A snapshot's rate limit, its path regexes compiled.
pub struct CompiledRateLimit {
    limit: RateLimit,
    route_regexes: Vec<Option<Regex>>,
}

impl CompiledRateLimit {
    pub fn new(limit: RateLimit) -> Result<CompiledRateLimit, regex::Error> {
        let route_regexes = limit
            .routes
            .iter()
            .map(|route| match &route.path {
                PathMatch::Regex(pattern) => anchored_regex(pattern).map(Some),
                _ => Ok(None),
            })
            .collect::<Result<_, _>>()?;
        Ok(CompiledRateLimit { limit, route_regexes })
    }

    /// The route whose limit applies to `path`, if any.
    fn route_of(&self, path: &str) -> Option<usize> {
        self.limit
            .routes
            .iter()
            .zip(&self.route_regexes)
            .position(|(route, regex)| route.path.matches(path, regex.as_ref()))
    }
}

/// The buckets, shared by every inbound connection.
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<Option<Buckets>>,
}

struct Buckets {
    limit: RateLimit,
    instance: Bucket,
    routes: Vec<Bucket>,
}

struct Bucket {
    per_second: f64,
    capacity: f64,
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    fn new(per_second: u32, burst: u32, now: Instant) -> Bucket {
        let capacity = f64::from(burst.max(1));
        Bucket { per_second: f64::from(per_second), capacity, tokens: capacity, refilled: now }
    }

    fn take(&mut self, now: Instant) -> bool {
        if self.per_second == 0.0 {
            return true; // unlimited
        }
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl RateLimiter {
    /// Whether a request for `path` may go on now; it takes a token if so.
    pub fn admit(&self, compiled: &CompiledRateLimit, path: &str) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let buckets = match &mut *buckets {
            Some(buckets) if buckets.limit == compiled.limit => buckets,
            slot => {
                let limit = compiled.limit.clone();
                let routes =
                    limit.routes.iter().map(|r| Bucket::new(r.requests_per_second, r.max_burst, now)).collect();
                let instance = Bucket::new(limit.requests_per_second, limit.max_burst, now);
                slot.insert(Buckets { limit, instance, routes })
            }
        };
        match compiled.route_of(path) {
            Some(route) => buckets.routes[route].take(now),
            None => buckets.instance.take(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use weft_api::proxy::RouteRateLimit;

    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::new(10, 3, start);
        assert_eq!((0..4).map(|_| bucket.take(start)).collect::<Vec<_>>(), [true, true, true, false]);
        assert!(bucket.take(start + Duration::from_millis(100)), "one token back after 100 ms at 10/s");
        assert!(!bucket.take(start + Duration::from_millis(100)));
    }

    #[test]
    fn routes_have_their_own_buckets() {
        let limit = RateLimit {
            requests_per_second: 0,
            max_burst: 0,
            routes: vec![RouteRateLimit {
                path: PathMatch::Regex("/slow/.*".into()),
                requests_per_second: 1,
                max_burst: 1,
            }],
        };
        let compiled = CompiledRateLimit::new(limit).unwrap();
        let limiter = RateLimiter::default();
        assert!(limiter.admit(&compiled, "/slow/a"));
        assert!(!limiter.admit(&compiled, "/slow/b"));
        assert!((0..100).all(|_| limiter.admit(&compiled, "/fast")), "unlimited outside the route");
    }
}

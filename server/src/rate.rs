//! The one token bucket: how leaf and agent certificate signing, and calls
//! from callers without a certificate, are rate-limited on a server, and an
//! agent's HTTP writes (`limits { rpc_rate rpc_max_burst }`).

use std::sync::Mutex;

use tokio::time::Instant;

/// `rate` tokens a second, bursts up to `burst`.
pub struct TokenBucket {
    state: Mutex<(f64, Instant)>,
    rate: f64,
    burst: f64,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64) -> Self {
        Self { state: Mutex::new((burst, Instant::now())), rate, burst }
    }

    /// Takes a token if there is one.
    pub fn take(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, at) = &mut *state;
        *tokens = (*tokens + at.elapsed().as_secs_f64() * self.rate).min(self.burst);
        *at = Instant::now();
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_a_burst_then_refuses() {
        let bucket = TokenBucket::new(1.0, 3.0);
        assert!((0..3).all(|_| bucket.take()));
        assert!(!bucket.take());
    }
}

//! Per-client request rate: a token bucket per client IP. Each JSON-RPC call
//! (batch items one by one) takes a token; tokens refill at `rate` per second
//! up to `burst`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Buckets idle this long are full again and can be forgotten.
const FORGET_AFTER_SECS: f64 = 60.0;
/// Prune idle buckets when the table grows past this size.
const PRUNE_AT: usize = 10_000;

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `rate` calls per second, at most `burst` at once; a rate of 0 turns the
    /// limit off.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `calls` tokens for `client`; false (and nothing taken) when the
    /// bucket holds fewer.
    pub fn take(&self, client: IpAddr, calls: usize, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= PRUNE_AT {
            buckets.retain(|_, b| now.duration_since(b.at).as_secs_f64() < FORGET_AFTER_SECS);
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.at = now;
        let calls = calls as f64;
        if bucket.tokens >= calls {
            bucket.tokens -= calls;
            true
        } else {
            false
        }
    }
}

/// Open WebSocket connections per client IP: each holds a connection to a
/// node, so one client may not hold many.
pub struct Connections {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One open connection; closing it (dropping) frees the slot.
pub struct Slot {
    client: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Connections {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A slot for `client`, or `None` when it holds `max` already.
    pub fn open(&self, client: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(client).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            client,
            open: self.open.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_is_cut_and_refills_per_client() {
        let limiter = RateLimiter::new(10, 5);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let t0 = Instant::now();
        assert!((0..5).all(|_| limiter.take(a, 1, t0)));
        assert!(!limiter.take(a, 1, t0), "the sixth call at once is over");
        assert!(limiter.take(b, 5, t0), "another client has its own bucket");
        assert!(limiter.take(a, 1, t0 + Duration::from_millis(100)));
        assert!(!limiter.take(a, 1, t0 + Duration::from_millis(100)));
        assert!(
            !limiter.take(a, 6, t0 + Duration::from_secs(60)),
            "never above the burst"
        );
        assert!(limiter.take(a, 5, t0 + Duration::from_secs(60)));
        assert!(RateLimiter::new(0, 0).take(a, 1000, t0), "0 turns it off");
    }

    #[test]
    fn websocket_slots_per_client_are_bounded_and_freed() {
        let c = Connections::new(2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let first = c.open(a).expect("1st");
        let _second = c.open(a).expect("2nd");
        assert!(c.open(a).is_none(), "a third is refused");
        assert!(
            c.open([10, 0, 0, 2].into()).is_some(),
            "other clients are not"
        );
        drop(first);
        assert!(c.open(a).is_some(), "a closed connection frees its slot");
    }

    #[test]
    fn the_gateway_options_fit_the_aggregator_command_line() {
        use clap::CommandFactory;
        crate::Cli::command().debug_assert();
    }
}

//! Rate limits for log lines, shared by the agent and the aggregator: a
//! hostile or broken peer must not flood the log, yet each kind of problem
//! must be seen.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Lets one event per key through every `every`; remembers at most about
/// `cap` keys (older ones are forgotten once the table grows past it).
#[derive(Debug)]
pub struct KeyedLimiter<K> {
    every: Duration,
    cap: usize,
    last: HashMap<K, Instant>,
}

impl<K: Eq + Hash> KeyedLimiter<K> {
    pub fn new(every: Duration, cap: usize) -> Self {
        Self {
            every,
            cap,
            last: HashMap::new(),
        }
    }

    /// Whether an event for `key` is due at `now` (and records it if so).
    pub fn due(&mut self, key: K, now: Instant) -> bool {
        if self.last.len() > self.cap {
            let every = self.every;
            self.last.retain(|_, at| now.duration_since(*at) < every);
        }
        match self.last.get(&key) {
            Some(at) if now.duration_since(*at) < self.every => false,
            _ => {
                self.last.insert(key, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_key_and_interval_with_a_bounded_table() {
        let mut l = KeyedLimiter::new(Duration::from_secs(60), 2);
        let t = Instant::now();
        assert!(l.due("a", t));
        assert!(!l.due("a", t + Duration::from_secs(59)));
        assert!(l.due("b", t + Duration::from_secs(1)));
        assert!(l.due("a", t + Duration::from_secs(61)));
        assert!(l.due("c", t + Duration::from_secs(62)));
        // Past the cap, keys older than the interval are forgotten.
        assert!(l.due("d", t + Duration::from_secs(200)));
        assert_eq!(l.last.len(), 1);
    }
}

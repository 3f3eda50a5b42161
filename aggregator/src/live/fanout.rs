//! The live stream's fan-out: every change is rendered once and broadcast
//! as bytes; each viewer's connection writes what it receives. Everything
//! here runs under the live view's lock, so a subscriber's snapshot and the
//! changes it receives after it are never out of order.
//!
//! A broadcast costs every viewer a wake-up and a write, whether it carries
//! one change or twenty. So a change goes out at once only when the last
//! broadcast is at least `window` old; one that follows sooner is held, and
//! leaves with the first change that finds the window over, or when it has
//! waited `window` itself (the flusher's timer, `web::flush_stream`). In a
//! burst of reports the changes ride on each other's broadcasts and the
//! timer is rarely needed, so holding adds no wake-up of its own; a change
//! waits at most `window`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio::sync::Notify;

/// Broadcasts a viewer may fall behind before it gets a fresh snapshot.
const CHANNEL_CAPACITY: usize = 4096;
/// Held changes are broadcast once they reach this many bytes, window or not.
const MAX_HELD_BYTES: usize = 64 * 1024;

pub struct FanOut {
    updates: broadcast::Sender<Bytes>,
    /// Zero: every change is broadcast at once.
    window: Duration,
    held: Vec<Bytes>,
    held_bytes: usize,
    /// When the oldest held change was held.
    held_since: Option<Instant>,
    /// When the last broadcast went out.
    sent_at: Option<Instant>,
    /// Wakes the flusher when the held changes' deadline appears or goes.
    deadline_changed: Arc<Notify>,
}

impl Default for FanOut {
    fn default() -> Self {
        Self {
            updates: broadcast::channel(CHANNEL_CAPACITY).0,
            window: Duration::ZERO,
            held: Vec::new(),
            held_bytes: 0,
            held_since: None,
            sent_at: None,
            deadline_changed: Arc::new(Notify::new()),
        }
    }
}

impl FanOut {
    /// Holds a change that follows a broadcast within `window` (zero:
    /// never). Held changes need the flusher running (`web::flush_stream`),
    /// or they wait for the next change.
    pub fn set_window(&mut self, window: Duration) {
        self.flush(Instant::now());
        self.window = window;
    }

    /// Whether anyone would receive a change (else none is rendered).
    pub fn listening(&self) -> bool {
        self.updates.receiver_count() > 0
    }

    /// Renders one change and sends it (only when someone listens).
    pub fn publish(&mut self, event: &str, data: &impl serde::Serialize) {
        if self.listening() {
            self.send(super::sse_event(event, data), Instant::now());
        }
    }

    /// Broadcasts `event` with what is held, or holds it (see module docs).
    pub fn send(&mut self, event: Bytes, now: Instant) {
        self.held_bytes += event.len();
        self.held.push(event);
        let window_over = self
            .sent_at
            .is_none_or(|sent| now.saturating_duration_since(sent) >= self.window);
        if window_over || self.held_bytes >= MAX_HELD_BYTES {
            self.flush(now);
        } else if self.held_since.is_none() {
            self.held_since = Some(now);
            self.deadline_changed.notify_one();
        }
    }

    /// When the oldest held change has waited the window (none held: none).
    pub fn deadline(&self) -> Option<Instant> {
        self.held_since.map(|since| since + self.window)
    }

    /// Broadcasts what is held if it has waited long enough; returns the
    /// deadline still ahead, if any.
    pub fn flush_due(&mut self, now: Instant) -> Option<Instant> {
        let deadline = self.deadline()?;
        if now < deadline {
            return Some(deadline);
        }
        self.flush(now);
        None
    }

    /// The flusher's signal: the deadline appeared or went.
    pub fn deadline_changed(&self) -> Arc<Notify> {
        self.deadline_changed.clone()
    }

    /// Broadcasts what is held, in one piece.
    fn flush(&mut self, now: Instant) {
        let event = match self.held.len() {
            0 => return,
            1 => self.held.swap_remove(0),
            _ => {
                let joined = Bytes::from(self.held.concat());
                self.held.clear();
                joined
            }
        };
        self.held_bytes = 0;
        let _ = self.updates.send(event);
        self.sent_at = Some(now);
        if self.held_since.take().is_some() {
            // Disarms the flusher's timer, so it does not wake for nothing.
            self.deadline_changed.notify_one();
        }
    }

    /// A new receiver. What is held goes out first: the snapshot the
    /// subscriber takes under the same lock already has it.
    pub fn subscribe(&mut self) -> broadcast::Receiver<Bytes> {
        self.flush(Instant::now());
        self.updates.subscribe()
    }

    /// Empties a receiver that fell behind (and broadcasts what is held), so
    /// that the snapshot taken next under the same lock is followed only by
    /// newer changes.
    pub fn resync(&mut self, receiver: &mut broadcast::Receiver<Bytes>) {
        self.flush(Instant::now());
        drain(receiver);
    }

    /// Ends every viewer's stream after what it has waiting and what is
    /// held, so a stopping server is not kept waiting by open dashboards.
    pub fn close(&mut self) {
        self.flush(Instant::now());
        self.updates = broadcast::channel(CHANNEL_CAPACITY).0;
    }
}

/// Drops everything a receiver has waiting.
pub fn drain(receiver: &mut broadcast::Receiver<Bytes>) {
    while !matches!(
        receiver.try_recv(),
        Err(TryRecvError::Empty | TryRecvError::Closed)
    ) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(3);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn event(i: usize) -> Bytes {
        Bytes::from(format!("event: node\ndata: {i}\n\n"))
    }

    fn windowed() -> (FanOut, broadcast::Receiver<Bytes>) {
        let mut fan = FanOut::default();
        fan.set_window(WINDOW);
        let rx = fan.subscribe();
        (fan, rx)
    }

    #[test]
    fn without_a_window_every_change_goes_at_once() {
        let mut fan = FanOut::default();
        let mut rx = fan.subscribe();
        let t = Instant::now();
        fan.send(event(0), t);
        fan.send(event(1), t);
        assert_eq!(rx.try_recv().unwrap(), event(0));
        assert_eq!(rx.try_recv().unwrap(), event(1));
        assert_eq!(fan.deadline(), None);
    }

    #[test]
    fn a_change_after_a_quiet_window_goes_at_once() {
        let (mut fan, mut rx) = windowed();
        let t = Instant::now();
        fan.send(event(0), t);
        assert_eq!(rx.try_recv().unwrap(), event(0));
        fan.send(event(1), t + WINDOW);
        assert_eq!(rx.try_recv().unwrap(), event(1));
        assert_eq!(fan.deadline(), None, "nothing held, no timer");
    }

    #[test]
    fn a_burst_rides_on_the_first_change_past_the_window() {
        let (mut fan, mut rx) = windowed();
        let t = Instant::now();
        fan.send(event(0), t);
        fan.send(event(1), t + ms(1));
        fan.send(event(2), t + ms(2));
        assert_eq!(rx.try_recv().unwrap(), event(0));
        assert!(rx.try_recv().is_err(), "held");
        assert_eq!(fan.deadline(), Some(t + ms(1) + WINDOW));
        assert_eq!(fan.flush_due(t + ms(2)), Some(t + ms(4)), "not due yet");
        fan.send(event(3), t + ms(3));
        assert_eq!(
            rx.try_recv().unwrap(),
            [event(1), event(2), event(3)].concat(),
            "one broadcast, in order"
        );
        assert_eq!(fan.deadline(), None, "the timer is disarmed");
    }

    #[test]
    fn a_held_change_waits_at_most_the_window() {
        let (mut fan, mut rx) = windowed();
        let t = Instant::now();
        fan.send(event(0), t);
        fan.send(event(1), t + ms(2));
        rx.try_recv().unwrap();
        assert_eq!(fan.flush_due(t + ms(5)), None);
        assert_eq!(rx.try_recv().unwrap(), event(1));
        assert_eq!(fan.flush_due(t + ms(9)), None, "nothing held");
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn held_changes_go_out_once_they_are_large() {
        let (mut fan, mut rx) = windowed();
        let t = Instant::now();
        let big = Bytes::from(vec![b'x'; MAX_HELD_BYTES / 2]);
        fan.send(event(0), t);
        fan.send(big.clone(), t);
        assert_eq!(rx.try_recv().unwrap(), event(0));
        assert!(rx.try_recv().is_err());
        fan.send(big.clone(), t);
        assert_eq!(rx.try_recv().unwrap(), [big.clone(), big].concat());
    }

    #[test]
    fn a_subscriber_gets_no_change_older_than_its_snapshot() {
        let (mut fan, mut first) = windowed();
        let t = Instant::now();
        fan.send(event(0), t);
        fan.send(event(1), t);
        let mut late = fan.subscribe();
        assert_eq!(first.try_recv().unwrap(), event(0));
        assert_eq!(first.try_recv().unwrap(), event(1), "flushed for it");
        assert!(late.try_recv().is_err(), "held changes predate it");
        assert_eq!(fan.deadline(), None);
    }

    #[test]
    fn a_resync_leaves_nothing_older_behind() {
        let (mut fan, mut rx) = windowed();
        let t = Instant::now();
        fan.send(event(0), t);
        fan.send(event(1), t);
        fan.resync(&mut rx);
        assert!(rx.try_recv().is_err());
        // The resync sent what was held (now): the next window starts there.
        fan.send(event(2), Instant::now() + WINDOW);
        assert_eq!(rx.try_recv().unwrap(), event(2));
    }

    #[test]
    fn closing_ends_the_receivers_after_what_they_have_waiting_and_what_is_held() {
        let (mut fan, mut rx) = windowed();
        let t = Instant::now();
        fan.send(event(0), t);
        fan.send(event(1), t);
        fan.close();
        assert_eq!(rx.try_recv().unwrap(), event(0));
        assert_eq!(rx.try_recv().unwrap(), event(1));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
        assert!(!fan.listening(), "a new channel: nobody listens");
    }

    #[test]
    fn drained_receivers_get_only_later_changes() {
        let mut fan = FanOut::default();
        let mut rx = fan.subscribe();
        fan.publish("node", &0);
        drain(&mut rx);
        fan.publish("node", &1);
        assert_eq!(rx.try_recv().unwrap(), "event: node\ndata: 1\n\n");
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }
}

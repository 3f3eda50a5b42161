//! The live stream's fan-out. Every change is rendered once and broadcast
//! as bytes; each viewer's connection writes what it receives.
//!
//! A viewer costs a write per broadcast, and a write costs the same kernel
//! work whether it carries one change or ten. So a change sent while the
//! stream is idle goes out at once, and the changes that follow it within
//! a short window are held and broadcast together when the window ends
//! (then the next window opens if anything was sent). A lone change is
//! never delayed; one in a burst waits at most the window. Everything here
//! runs under the live view's lock, so a subscriber's snapshot and the
//! changes it receives are never out of order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio::sync::Notify;

/// Broadcasts a viewer may fall behind before it gets a fresh snapshot.
const CHANNEL_CAPACITY: usize = 4096;

pub struct FanOut {
    updates: broadcast::Sender<Bytes>,
    /// Zero: every change is broadcast at once.
    window: Duration,
    held: Vec<Bytes>,
    /// When the open window started (none: the stream is idle).
    opened: Option<Instant>,
    /// Wakes `web::end_stream_windows` when a window opens.
    window_opened: Arc<Notify>,
}

impl Default for FanOut {
    fn default() -> Self {
        Self {
            updates: broadcast::channel(CHANNEL_CAPACITY).0,
            window: Duration::ZERO,
            held: Vec::new(),
            opened: None,
            window_opened: Arc::new(Notify::new()),
        }
    }
}

impl FanOut {
    /// Holds changes that follow a broadcast for `window` (zero: never).
    /// Needs `web::end_stream_windows` running, or held changes wait for the next.
    pub fn set_window(&mut self, window: Duration) {
        self.flush();
        self.window = window;
    }

    pub fn window(&self) -> Duration {
        self.window
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

    /// Broadcasts `event` now, or holds it when a window is open.
    pub fn send(&mut self, event: Bytes, now: Instant) {
        if self.window.is_zero() {
            let _ = self.updates.send(event);
            return;
        }
        match self.opened {
            None => {
                let _ = self.updates.send(event);
                self.opened = Some(now);
                self.window_opened.notify_one();
            }
            Some(opened) if now.duration_since(opened) >= self.window => {
                // The window is over and the flusher has not run yet.
                self.held.push(event);
                self.flush();
                self.opened = Some(now);
            }
            Some(_) => self.held.push(event),
        }
    }

    /// Broadcasts what is held, in one piece.
    fn flush(&mut self) {
        let event = match self.held.len() {
            0 => return,
            1 => self.held.swap_remove(0),
            _ => {
                let joined = Bytes::from(self.held.concat());
                self.held.clear();
                joined
            }
        };
        let _ = self.updates.send(event);
    }

    /// Ends every viewer's stream (after what is held), so a stopping
    /// server is not kept waiting by open dashboards.
    pub fn close(&mut self) {
        self.flush();
        self.updates = broadcast::channel(CHANNEL_CAPACITY).0;
    }

    /// A new receiver. What was held is broadcast first: it is older than
    /// the snapshot the subscriber takes under the same lock.
    pub fn subscribe(&mut self) -> broadcast::Receiver<Bytes> {
        self.flush();
        self.updates.subscribe()
    }

    /// Empties a receiver that fell behind, and what is held, so that the
    /// snapshot taken next under the same lock is followed only by newer
    /// changes.
    pub fn resync(&mut self, receiver: &mut broadcast::Receiver<Bytes>) {
        self.flush();
        drain(receiver);
    }

    /// Ends the window if it is over: broadcasts what it held and opens the
    /// next one, or closes it when nothing was held. Returns when to call
    /// again (none: the stream is idle until a window opens).
    pub fn end_window(&mut self, now: Instant) -> Option<Instant> {
        let opened = self.opened?;
        let ends = opened + self.window;
        if now < ends {
            return Some(ends);
        }
        if self.held.is_empty() {
            self.opened = None;
            return None;
        }
        self.flush();
        self.opened = Some(now);
        Some(now + self.window)
    }

    pub fn window_opened(&self) -> Arc<Notify> {
        self.window_opened.clone()
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
    fn a_change_on_an_idle_stream_goes_out_at_once() {
        let (mut fan, mut rx) = windowed();
        let t = Instant::now();
        fan.send(event(0), t);
        assert_eq!(rx.try_recv().unwrap(), event(0));
        assert_eq!(fan.end_window(t), Some(t + WINDOW), "the window is open");
    }

    #[test]
    fn changes_in_a_window_go_out_together_when_it_ends() {
        let (mut fan, mut rx) = windowed();
        let t = Instant::now();
        fan.send(event(0), t);
        fan.send(event(1), t + Duration::from_millis(1));
        fan.send(event(2), t + Duration::from_millis(2));
        assert_eq!(rx.try_recv().unwrap(), event(0));
        assert!(rx.try_recv().is_err(), "held until the window ends");
        assert_eq!(
            fan.end_window(t + Duration::from_millis(1)),
            Some(t + WINDOW)
        );
        assert!(rx.try_recv().is_err(), "early: still held");
        let next = fan.end_window(t + WINDOW);
        assert_eq!(rx.try_recv().unwrap(), [event(1), event(2)].concat());
        assert_eq!(next, Some(t + 2 * WINDOW), "the next window opens");
        assert_eq!(fan.end_window(t + 2 * WINDOW), None, "nothing held: idle");
        fan.send(event(3), t + 3 * WINDOW);
        assert_eq!(rx.try_recv().unwrap(), event(3), "idle again: at once");
    }

    #[test]
    fn a_late_flusher_does_not_hold_changes_past_the_window() {
        let (mut fan, mut rx) = windowed();
        let t = Instant::now();
        fan.send(event(0), t);
        fan.send(event(1), t + Duration::from_millis(1));
        rx.try_recv().unwrap();
        fan.send(event(2), t + 2 * WINDOW);
        assert_eq!(rx.try_recv().unwrap(), [event(1), event(2)].concat());
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
        assert_eq!(fan.end_window(t + WINDOW), None);
    }

    #[test]
    fn a_resync_leaves_nothing_older_behind() {
        let (mut fan, mut rx) = windowed();
        let t = Instant::now();
        fan.send(event(0), t);
        fan.send(event(1), t);
        fan.resync(&mut rx);
        assert!(rx.try_recv().is_err());
        fan.send(event(2), t + WINDOW);
        assert_eq!(rx.try_recv().unwrap(), event(2));
    }

    #[test]
    fn closing_ends_the_receivers_after_what_was_held() {
        let (mut fan, mut rx) = windowed();
        let t = Instant::now();
        fan.send(event(0), t);
        fan.send(event(1), t);
        fan.close();
        assert_eq!(rx.try_recv().unwrap(), event(0));
        assert_eq!(rx.try_recv().unwrap(), event(1));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    }

    #[test]
    fn without_a_window_every_change_goes_out_at_once() {
        let mut fan = FanOut::default();
        let mut rx = fan.subscribe();
        let t = Instant::now();
        for i in 0..3 {
            fan.send(event(i), t);
            assert_eq!(rx.try_recv().unwrap(), event(i));
        }
        assert_eq!(fan.end_window(t), None);
    }
}

//! The live stream's fan-out: every change is rendered once and broadcast
//! as bytes; each viewer's connection writes what it receives. Everything
//! here runs under the live view's lock, so a subscriber's snapshot and the
//! changes it receives after it are never out of order.

use bytes::Bytes;
use tokio::sync::broadcast::{self, error::TryRecvError};

/// Changes a viewer may fall behind before it gets a fresh snapshot.
const CHANNEL_CAPACITY: usize = 4096;

pub struct FanOut {
    updates: broadcast::Sender<Bytes>,
}

impl Default for FanOut {
    fn default() -> Self {
        Self {
            updates: broadcast::channel(CHANNEL_CAPACITY).0,
        }
    }
}

impl FanOut {
    /// Renders one change and broadcasts it (only when someone listens).
    pub fn publish(&self, event: &str, data: &impl serde::Serialize) {
        if self.listening() {
            let _ = self.updates.send(super::sse_event(event, data));
        }
    }

    /// Whether anyone would receive a change (else none is rendered).
    pub fn listening(&self) -> bool {
        self.updates.receiver_count() > 0
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Bytes> {
        self.updates.subscribe()
    }

    /// Ends every viewer's stream after what it has waiting, so a stopping
    /// server is not kept waiting by open dashboards.
    pub fn close(&mut self) {
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

    #[test]
    fn closing_ends_the_receivers_after_what_they_have_waiting() {
        let mut fan = FanOut::default();
        let mut rx = fan.subscribe();
        fan.publish("node", &0);
        fan.publish("node", &1);
        fan.close();
        assert_eq!(rx.try_recv().unwrap(), "event: node\ndata: 0\n\n");
        assert_eq!(rx.try_recv().unwrap(), "event: node\ndata: 1\n\n");
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
        assert!(!fan.listening(), "a new channel: nobody listens");
    }

    #[test]
    fn drained_receivers_get_only_later_changes() {
        let fan = FanOut::default();
        let mut rx = fan.subscribe();
        fan.publish("node", &0);
        drain(&mut rx);
        fan.publish("node", &1);
        assert_eq!(rx.try_recv().unwrap(), "event: node\ndata: 1\n\n");
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }
}

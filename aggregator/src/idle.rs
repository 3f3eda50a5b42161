//! A quiet-spell deadline for connections that see many messages: "this
//! long since the last activity". It keeps one timer that moves only when
//! it fires; re-arming a timer at every activity would cost a timer-wheel
//! insert and removal per message.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

pub struct IdleTimer {
    timer: Pin<Box<Sleep>>,
    last_activity: Instant,
    limit: Duration,
}

impl IdleTimer {
    /// Expires `limit` after now, unless touched meanwhile.
    pub fn new(limit: Duration) -> Self {
        let now = Instant::now();
        Self {
            timer: Box::pin(tokio::time::sleep_until(now + limit)),
            last_activity: now,
            limit,
        }
    }

    /// Activity now: the quiet spell starts again.
    pub fn touch(&mut self) {
        self.last_activity = Instant::now();
    }

    /// Activity now, and a new limit from here on.
    pub fn restart(&mut self, limit: Duration) {
        self.limit = limit;
        self.touch();
        self.timer.as_mut().reset(self.last_activity + limit);
    }

    /// Resolves once `limit` has passed without a touch. Cancel-safe (all
    /// state lives in `self`); after it resolves, touch before awaiting it
    /// again, or it resolves at once.
    pub async fn expired(&mut self) {
        loop {
            self.timer.as_mut().await;
            let due = self.last_activity + self.limit;
            if due <= Instant::now() {
                return;
            }
            self.timer.as_mut().reset(due);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn expires_a_limit_after_the_last_touch() {
        let start = Instant::now();
        let mut idle = IdleTimer::new(Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(6)).await;
        idle.touch();
        idle.expired().await;
        assert_eq!(start.elapsed(), Duration::from_secs(16));
    }

    #[tokio::test(start_paused = true)]
    async fn restart_sets_a_new_limit_from_now() {
        let start = Instant::now();
        let mut idle = IdleTimer::new(Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(2)).await;
        idle.restart(Duration::from_secs(60));
        idle.expired().await;
        assert_eq!(start.elapsed(), Duration::from_secs(62));
    }

    #[tokio::test(start_paused = true)]
    async fn an_untouched_timer_expires_again_at_once() {
        let mut idle = IdleTimer::new(Duration::from_secs(1));
        idle.expired().await;
        let again = Instant::now();
        idle.expired().await;
        assert_eq!(again.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_wait_keeps_the_deadline() {
        let start = Instant::now();
        let mut idle = IdleTimer::new(Duration::from_secs(10));
        // A select that another branch wins drops the wait half-way.
        tokio::select! {
            () = idle.expired() => panic!("expired early"),
            () = tokio::time::sleep(Duration::from_secs(4)) => {}
        }
        idle.expired().await;
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }
}

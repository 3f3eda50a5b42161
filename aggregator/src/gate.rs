//! Admission of unauthenticated ethstats connections: at most
//! [`PER_ADDRESS`] per source address and [`TOTAL`] in all may be waiting to
//! log in. A connection holds its permit until it logs in or closes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::refusals::{Reason, Refusal};

/// Pending logins per source address.
pub const PER_ADDRESS: usize = 8;
/// Pending logins in total.
pub const TOTAL: usize = 64;

#[derive(Default)]
struct Pending {
    by_address: HashMap<IpAddr, usize>,
    total: usize,
}

pub struct LoginGate {
    pending: Arc<Mutex<Pending>>,
    per_address: usize,
    total: usize,
}

impl Default for LoginGate {
    fn default() -> Self {
        Self::new(PER_ADDRESS, TOTAL)
    }
}

/// A connection's place among the pending logins; released on drop.
pub struct LoginPermit {
    pending: Arc<Mutex<Pending>>,
    address: IpAddr,
}

impl Drop for LoginPermit {
    fn drop(&mut self) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.total = p.total.saturating_sub(1);
        if let Some(n) = p.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                p.by_address.remove(&self.address);
            }
        }
    }
}

impl LoginGate {
    pub fn new(per_address: usize, total: usize) -> Self {
        Self {
            pending: Arc::default(),
            per_address,
            total,
        }
    }

    pub fn try_admit(&self, address: IpAddr) -> Result<LoginPermit, Refusal> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.total >= self.total {
            return Err(Refusal::new(
                Reason::Overloaded,
                format!("{} ethstats connections are waiting to log in", p.total),
            ));
        }
        let mine = p.by_address.entry(address).or_default();
        if *mine >= self.per_address {
            return Err(Refusal::new(
                Reason::TooManyConnections,
                format!("{mine} ethstats connections from {address} are waiting to log in"),
            ));
        }
        *mine += 1;
        p.total += 1;
        Ok(LoginPermit {
            pending: self.pending.clone(),
            address,
        })
    }

    /// Connections waiting to log in now.
    pub fn pending(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_logins_are_bounded_per_address_and_in_total() {
        let gate = LoginGate::new(2, 3);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let p1 = gate.try_admit(a).unwrap();
        let _p2 = gate.try_admit(a).unwrap();
        assert_eq!(
            gate.try_admit(a).err().map(|r| r.reason),
            Some(Reason::TooManyConnections)
        );
        let _p3 = gate.try_admit(b).unwrap();
        assert_eq!(
            gate.try_admit(b).err().map(|r| r.reason),
            Some(Reason::Overloaded)
        );
        drop(p1);
        assert_eq!(gate.pending(), 2);
        assert!(
            gate.try_admit(a).is_ok(),
            "a closed connection frees its place"
        );
    }
}

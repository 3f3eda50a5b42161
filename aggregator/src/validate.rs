//! Checks on every block report (agent and ethstats paths) before it reaches
//! the live view or the store. Pure functions over the report and what the
//! aggregator already knows of the chain.
//!
//! Rules:
//! - hashes are 0x + 64 hex digits; a sealer, when given, is a 0x address;
//! - the number fits the store's `i64`;
//! - the timestamp is at most [`FUTURE_SKEW_S`] seconds ahead of the clock;
//! - the height is plausible: clique spaces blocks at least `period` seconds
//!   apart, so a block `k` above the reference head has a timestamp at least
//!   `k × period` after it, and that timestamp cannot be in the future:
//!   `number <= reference + (now + skew − reference.timestamp) / period +`
//!   [`HEIGHT_SLACK`]. Without a reference, `number <= (now + skew) / period`
//!   (the genesis is not older than the epoch). Period 0 (blocks on demand)
//!   has no time bound;
//! - parent linkage: when the reporting node itself reported a head at
//!   `number − 1`, the parent must be that block, or another block known at
//!   that height (a reorg onto a branch that other nodes reported).

use geth_wire::BlockReport;

use crate::refusals::{Reason, Refusal};

/// How far into the future a block timestamp may be (seconds).
pub const FUTURE_SKEW_S: u64 = 15;
/// Extra heights allowed above the time bound (clock and rounding slack).
pub const HEIGHT_SLACK: u64 = 2;

/// What the aggregator knows of the chain around a reported block.
#[derive(Debug, Default, Clone, Copy)]
pub struct ChainContext<'a> {
    pub period: u64,
    /// The reference head: (number, timestamp).
    pub reference: Option<(u64, u64)>,
    /// The hash the reporting node reported at `number − 1`, if any.
    pub own_parent: Option<&'a str>,
    /// Whether the report's parent hash is a known block at `number − 1`.
    pub parent_known: bool,
}

/// Hex in lower case, so one block cannot appear under two spellings.
pub fn normalise(b: &mut BlockReport) {
    b.hash.make_ascii_lowercase();
    b.parent_hash.make_ascii_lowercase();
    if let Some(s) = &mut b.signer {
        s.make_ascii_lowercase();
    }
}

pub fn is_hash(h: &str) -> bool {
    h.len() == 66 && h.starts_with("0x") && h[2..].bytes().all(|c| c.is_ascii_hexdigit())
}

pub fn is_address(a: &str) -> bool {
    a.len() == 42 && a.starts_with("0x") && a[2..].bytes().all(|c| c.is_ascii_hexdigit())
}

/// The highest block number plausible now.
pub fn max_height(period: u64, reference: Option<(u64, u64)>, now_s: u64) -> u64 {
    let limit = i64::MAX as u64;
    if period == 0 {
        return limit;
    }
    let horizon = now_s.saturating_add(FUTURE_SKEW_S);
    match reference {
        Some((number, timestamp)) => number
            .saturating_add(horizon.saturating_sub(timestamp) / period)
            .saturating_add(HEIGHT_SLACK),
        None => horizon / period,
    }
    .min(limit)
}

pub fn check_block(b: &BlockReport, chain: &ChainContext<'_>, now_ms: u64) -> Result<(), Refusal> {
    if !is_hash(&b.hash) || !is_hash(&b.parent_hash) {
        return Err(Refusal::new(
            Reason::BadHash,
            "block hashes must be 0x + 64 hex digits",
        ));
    }
    if let Some(s) = &b.signer {
        if !is_address(s) {
            return Err(Refusal::new(
                Reason::BadSigner,
                "signer must be a 0x address",
            ));
        }
    }
    if i64::try_from(b.number).is_err() {
        return Err(Refusal::new(
            Reason::NumberOverflow,
            format!("block number {} is beyond {}", b.number, i64::MAX),
        ));
    }
    let now_s = now_ms / 1000;
    if b.timestamp > now_s.saturating_add(FUTURE_SKEW_S) {
        return Err(Refusal::new(
            Reason::FutureTimestamp,
            format!(
                "block timestamp {} is more than {FUTURE_SKEW_S} s ahead of the aggregator's clock ({now_s})",
                b.timestamp
            ),
        ));
    }
    let max = max_height(chain.period, chain.reference, now_s);
    if b.number > max {
        return Err(Refusal::new(
            Reason::ImplausibleHeight,
            format!(
                "block {} is higher than the chain can be now (at most {max} with a {} s period and reference {:?})",
                b.number,
                chain.period,
                chain.reference.map(|r| r.0)
            ),
        ));
    }
    if let Some(own) = chain.own_parent {
        if !own.eq_ignore_ascii_case(&b.parent_hash) && !chain.parent_known {
            return Err(Refusal::new(
                Reason::ParentMismatch,
                format!(
                    "parent {} of block {} is neither this node's block {own} at {} nor any known block there",
                    b.parent_hash,
                    b.number,
                    b.number.saturating_sub(1)
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u64) -> String {
        format!("0x{n:064x}")
    }

    fn block(number: u64, timestamp: u64) -> BlockReport {
        BlockReport {
            number,
            hash: h(number + 1000),
            parent_hash: h(number + 999),
            timestamp,
            signer: Some(format!("0x{:040x}", 1)),
            difficulty: 2,
            transactions: 0,
            gas_used: 0,
            gas_limit: 1,
            seen_at_ms: 0,
        }
    }

    const NOW_MS: u64 = 1_800_000_000_000;
    const NOW_S: u64 = NOW_MS / 1000;

    fn ctx<'a>() -> ChainContext<'a> {
        ChainContext {
            period: 2,
            reference: Some((100, NOW_S - 4)),
            own_parent: None,
            parent_known: false,
        }
    }

    fn reason(b: &BlockReport, c: &ChainContext<'_>) -> Option<Reason> {
        check_block(b, c, NOW_MS).err().map(|r| r.reason)
    }

    #[test]
    fn honest_blocks_pass() {
        assert_eq!(reason(&block(101, NOW_S - 2), &ctx()), None);
        assert_eq!(reason(&block(102, NOW_S), &ctx()), None);
        // Behind the reference (a node catching up) is fine.
        assert_eq!(reason(&block(5, NOW_S - 1000), &ctx()), None);
        // A little clock skew is fine.
        assert_eq!(reason(&block(102, NOW_S + 10), &ctx()), None);
    }

    #[test]
    fn the_number_must_fit_the_store() {
        let b = block(u64::MAX / 2 + 1, NOW_S);
        assert_eq!(b.number, 9_223_372_036_854_775_808);
        assert_eq!(reason(&b, &ctx()), Some(Reason::NumberOverflow));
        let max = block(i64::MAX as u64, NOW_S);
        assert_eq!(reason(&max, &ctx()), Some(Reason::ImplausibleHeight));
        let unbounded = ChainContext { period: 0, ..ctx() };
        assert_eq!(reason(&max, &unbounded), None, "period 0 has no time bound");
    }

    #[test]
    fn the_height_is_bounded_by_time_since_the_reference() {
        // 4 s since the reference + 15 s skew at 2 s per block = 9, + 2 slack.
        assert_eq!(max_height(2, Some((100, NOW_S - 4)), NOW_S), 111);
        assert_eq!(reason(&block(111, NOW_S), &ctx()), None);
        assert_eq!(
            reason(&block(112, NOW_S), &ctx()),
            Some(Reason::ImplausibleHeight)
        );
        // Without a reference: the genesis is not older than the epoch.
        let none = ChainContext {
            reference: None,
            ..ctx()
        };
        assert_eq!(reason(&block(1_000, NOW_S), &none), None);
        assert_eq!(
            reason(&block(NOW_S, NOW_S), &none),
            Some(Reason::ImplausibleHeight)
        );
    }

    #[test]
    fn future_timestamps_and_bad_hashes_are_refused() {
        assert_eq!(
            reason(&block(101, NOW_S + 16), &ctx()),
            Some(Reason::FutureTimestamp)
        );
        assert_eq!(
            reason(&block(101, u64::MAX), &ctx()),
            Some(Reason::FutureTimestamp)
        );
        let mut b = block(101, NOW_S);
        b.hash = "0x12".into();
        assert_eq!(reason(&b, &ctx()), Some(Reason::BadHash));
        let mut b = block(101, NOW_S);
        b.parent_hash = format!("0x{}", "g".repeat(64));
        assert_eq!(reason(&b, &ctx()), Some(Reason::BadHash));
        let mut b = block(101, NOW_S);
        b.signer = Some("miner".into());
        assert_eq!(reason(&b, &ctx()), Some(Reason::BadSigner));
    }

    #[test]
    fn a_parent_must_match_the_nodes_own_previous_block_or_a_known_one() {
        let b = block(101, NOW_S);
        let own = h(5);
        let mismatch = ChainContext {
            own_parent: Some(&own),
            ..ctx()
        };
        assert_eq!(reason(&b, &mismatch), Some(Reason::ParentMismatch));
        let reorg = ChainContext {
            own_parent: Some(&own),
            parent_known: true,
            ..ctx()
        };
        assert_eq!(reason(&b, &reorg), None, "a reorg onto a known branch");
        let same = b.parent_hash.to_uppercase().replace("0X", "0x");
        let linked = ChainContext {
            own_parent: Some(&same),
            ..ctx()
        };
        assert_eq!(reason(&b, &linked), None);
    }
}

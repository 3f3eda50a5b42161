//! Who sealed what: the clique bookkeeping behind the sealing metrics.
//!
//! Each canonical block is counted once per height. Its real sealer is
//! recovered from the header's seal, as `clique_getSigner` does it (the
//! header's `miner` is not the sealer in clique).
//! Difficulty 2 means the sealer was in turn; difficulty 1 means the in-turn
//! signer — `signers[number % len]`, signers sorted ascending — missed its slot.
//! A height seen again with another hash is a reorg: the new sealer is counted
//! and the replaced block is reported, so counters stay counters.

use std::collections::{BTreeMap, HashMap};

use alloy::primitives::{Address, Signature, B256};

/// Length of the clique seal at the end of `extraData`.
const SEAL_LEN: usize = 65;

/// The clique sealer of `header`: the seal (the last 65 bytes of `extraData`)
/// recovered over the seal hash, the header's hash without the seal — what
/// geth's `clique_getSigner` computes, without asking geth. `None` when the
/// header carries no seal that recovers.
pub fn recover_sealer(header: &alloy::consensus::Header) -> Option<Address> {
    let extra = &header.extra_data;
    let split = extra.len().checked_sub(SEAL_LEN)?;
    let signature = Signature::from_raw(&extra[split..]).ok()?;
    let mut unsealed = header.clone();
    unsealed.extra_data = alloy::primitives::Bytes::copy_from_slice(&extra[..split]);
    signature
        .recover_address_from_prehash(&unsealed.hash_slow())
        .ok()
}

/// What the agent needs to know about one block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockFacts {
    pub number: u64,
    pub hash: B256,
    pub parent_hash: B256,
    pub timestamp: u64,
    pub difficulty: u64,
    pub signer: Address,
    pub transactions: usize,
    pub gas_used: u64,
    pub gas_limit: u64,
    pub base_fee: Option<u64>,
}

/// What counting one block changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub signer: Address,
    pub in_turn: bool,
    /// The in-turn signer that missed this slot (difficulty 1).
    pub missed_by: Option<Address>,
    /// The sealer of the block this one replaced at the same height.
    pub replaced: Option<Address>,
    /// How many blocks had been counted on top of the replaced block (the
    /// highest counted height minus this one): a deep replacement is
    /// rewritten history, e.g. after a power cut of every node.
    pub replaced_depth: Option<u64>,
    /// How many counted blocks this one displaced: the replaced block and
    /// those counted above it (0 when nothing was replaced), so that sealed
    /// minus replaced stays the length of the counted chain.
    pub replaced_blocks: u64,
    /// Seconds since the parent block, when the parent was counted.
    pub interval: Option<u64>,
}

/// How many heights are remembered (reorg detection, parent timestamps).
const REMEMBERED: usize = 512;

#[derive(Debug, Default)]
pub struct SealingTracker {
    /// Sorted ascending, as clique orders them.
    signers: Vec<Address>,
    seen: BTreeMap<u64, (B256, Address, u64)>, // number → hash, signer, timestamp
    last_sealed: HashMap<Address, (u64, u64)>, // signer → block, timestamp
    consecutive_missed: HashMap<Address, u64>,
}

impl SealingTracker {
    pub fn set_signers(&mut self, mut signers: Vec<Address>) {
        signers.sort();
        signers.dedup();
        self.signers = signers;
    }

    pub fn signers(&self) -> &[Address] {
        &self.signers
    }

    /// The signer whose turn block `number` is.
    pub fn in_turn_signer(&self, number: u64) -> Option<Address> {
        let len = self.signers.len() as u64;
        (len > 0).then(|| self.signers[(number % len) as usize])
    }

    /// Hash counted at `number`, if remembered.
    pub fn hash_at(&self, number: u64) -> Option<B256> {
        self.seen.get(&number).map(|(hash, _, _)| *hash)
    }

    pub fn highest(&self) -> Option<u64> {
        self.seen.keys().next_back().copied()
    }

    /// Counts a block; `None` when this exact block was counted already.
    pub fn observe(&mut self, block: &BlockFacts) -> Option<Counted> {
        let replaced = match self.seen.get(&block.number) {
            Some((hash, _, _)) if *hash == block.hash => return None,
            Some((_, signer, _)) => Some(*signer),
            None => None,
        };
        let replaced_depth = replaced
            .and(self.highest())
            .map(|h| h.saturating_sub(block.number));
        // Everything above a replaced height belongs to the old branch.
        let replaced_blocks = match replaced {
            Some(_) => 1 + self.seen.split_off(&(block.number + 1)).len() as u64,
            None => 0,
        };
        let in_turn = block.difficulty == 2;
        let missed_by = if in_turn {
            None
        } else {
            self.in_turn_signer(block.number)
                .filter(|s| *s != block.signer)
        };
        if let Some(missed) = missed_by {
            *self.consecutive_missed.entry(missed).or_default() += 1;
        }
        self.consecutive_missed.insert(block.signer, 0);
        let newer = self
            .last_sealed
            .get(&block.signer)
            .is_none_or(|(n, _)| *n <= block.number);
        if newer {
            self.last_sealed
                .insert(block.signer, (block.number, block.timestamp));
        }
        let interval = block
            .number
            .checked_sub(1)
            .and_then(|parent| self.seen.get(&parent))
            .filter(|(hash, _, _)| *hash == block.parent_hash)
            .map(|(_, _, ts)| block.timestamp.saturating_sub(*ts));
        self.seen
            .insert(block.number, (block.hash, block.signer, block.timestamp));
        while self.seen.len() > REMEMBERED {
            self.seen.pop_first();
        }
        Some(Counted {
            signer: block.signer,
            in_turn,
            missed_by,
            replaced,
            replaced_depth,
            replaced_blocks,
            interval,
        })
    }

    /// Last block sealed by `signer`: (number, timestamp).
    pub fn last_sealed(&self, signer: &Address) -> Option<(u64, u64)> {
        self.last_sealed.get(signer).copied()
    }

    pub fn consecutive_missed(&self, signer: &Address) -> u64 {
        self.consecutive_missed.get(signer).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(i: u8) -> Address {
        Address::repeat_byte(i)
    }

    fn block(number: u64, by: u8, difficulty: u64, fork: u8) -> BlockFacts {
        BlockFacts {
            number,
            hash: B256::repeat_byte(number as u8 ^ fork),
            parent_hash: B256::repeat_byte((number as u8).wrapping_sub(1)),
            timestamp: 1000 + number,
            difficulty,
            signer: signer(by),
            transactions: 0,
            gas_used: 0,
            gas_limit: 30_000_000,
            base_fee: None,
        }
    }

    fn tracker() -> SealingTracker {
        let mut t = SealingTracker::default();
        t.set_signers(vec![signer(3), signer(1), signer(2)]);
        t
    }

    #[test]
    fn the_sealer_is_recovered_from_the_seal() {
        use alloy::signers::{local::PrivateKeySigner, SignerSync};
        let key = PrivateKeySigner::random();
        let mut header = alloy::consensus::Header {
            number: 7,
            difficulty: alloy::primitives::U256::from(2),
            gas_limit: 30_000_000,
            timestamp: 1_700_000_000,
            base_fee_per_gas: Some(7),
            extra_data: vec![0u8; 32].into(),
            ..Default::default()
        };
        let seal = key.sign_hash_sync(&header.hash_slow()).unwrap();
        let mut extra = header.extra_data.to_vec();
        // Clique writes v as 0/1.
        extra.extend_from_slice(&seal.as_bytes()[..64]);
        extra.push(u8::from(seal.v()));
        header.extra_data = extra.into();
        assert_eq!(recover_sealer(&header), Some(key.address()));
        // Any change to a sealed field changes the recovered address.
        header.gas_used = 1;
        assert_ne!(recover_sealer(&header), Some(key.address()));
        // No room for a seal: nothing to recover.
        header.extra_data = vec![0u8; 64].into();
        assert_eq!(recover_sealer(&header), None);
    }

    #[test]
    fn in_turn_follows_sorted_signers() {
        let t = tracker();
        assert_eq!(t.in_turn_signer(3), Some(signer(1)));
        assert_eq!(t.in_turn_signer(4), Some(signer(2)));
        assert_eq!(SealingTracker::default().in_turn_signer(1), None);
    }

    #[test]
    fn out_of_turn_blocks_count_a_missed_turn_for_the_in_turn_signer() {
        let mut t = tracker();
        let c = t.observe(&block(4, 2, 2, 0)).unwrap();
        assert!(c.in_turn && c.missed_by.is_none());
        // Block 5 is signer 3's turn; signer 1 sealed it out of turn.
        let c = t.observe(&block(5, 1, 1, 0)).unwrap();
        assert_eq!(c.missed_by, Some(signer(3)));
        assert_eq!(c.interval, Some(1));
        let c = t.observe(&block(8, 1, 1, 0)).unwrap(); // 8 % 3 = 2 → signer 3 again
        assert_eq!(c.missed_by, Some(signer(3)));
        assert_eq!(c.interval, None, "parent 7 was never counted");
        assert_eq!(t.consecutive_missed(&signer(3)), 2);
        t.observe(&block(11, 3, 2, 0)).unwrap();
        assert_eq!(
            t.consecutive_missed(&signer(3)),
            0,
            "sealing resets the streak"
        );
        assert_eq!(t.last_sealed(&signer(1)), Some((8, 1008)));
    }

    #[test]
    fn a_block_is_counted_once_and_reorgs_are_reported() {
        let mut t = tracker();
        assert!(t.observe(&block(6, 1, 1, 0)).is_some());
        assert!(t.observe(&block(6, 1, 1, 0)).is_none(), "same block twice");
        t.observe(&block(7, 2, 1, 0)).unwrap();
        let c = t.observe(&block(6, 3, 2, 0xff)).unwrap();
        assert_eq!(c.replaced, Some(signer(1)));
        assert_eq!(c.replaced_depth, Some(1), "block 7 was built on the old 6");
        assert_eq!(c.replaced_blocks, 2, "the old 6 and 7");
        assert_eq!(t.highest(), Some(6), "the old branch above 6 is forgotten");
    }

    #[test]
    fn resealing_after_a_power_cut_reports_the_depth_of_the_replaced_block() {
        let mut t = tracker();
        for n in 1..=30 {
            assert_eq!(t.observe(&block(n, 1, 1, 0)).unwrap().replaced_depth, None);
        }
        // geth came back at 4 and the network sealed 5 again.
        assert!(t.observe(&block(4, 1, 1, 0)).is_none());
        let c = t.observe(&block(5, 2, 2, 0xee)).unwrap();
        assert_eq!(c.replaced_depth, Some(25));
        assert_eq!(c.replaced_blocks, 26, "the old 5 to 30");
        let c = t.observe(&block(6, 2, 2, 0xee)).unwrap();
        assert_eq!(
            c.replaced_depth, None,
            "6 was forgotten with the old branch"
        );
    }
}

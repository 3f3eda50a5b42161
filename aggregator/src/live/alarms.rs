//! The fork, stall and history-rewritten alarms, re-evaluated every second.

use std::collections::BTreeMap;

use super::view::{Alarms, Fork, HistoryRewrite, NodeView, Stall};
use super::Live;

impl Live {
    /// Fork: two online nodes hold different hashes at one height (debounced
    /// over two block periods, so a normal race between sealers is not one).
    /// Stall: the reference head is older than `stall_periods` periods (the
    /// reference, not one node's claim, so a forged timestamp cannot hide it).
    pub(super) fn check_alarms(&mut self, now_ms: u64) {
        let fork = self.find_fork();
        let debounce = (2 * self.network.period.max(1) * 1000).max(3000);
        let fork = match (fork, self.fork_since_ms) {
            (Some(fork), Some(since)) if now_ms.saturating_sub(since) >= debounce => Some(fork),
            (Some(_), Some(_)) => None,
            (Some(_), None) => {
                self.fork_since_ms = Some(now_ms);
                None
            }
            (None, _) => {
                self.fork_since_ms = None;
                None
            }
        };
        let stall = self.best().and_then(|best| {
            let period = self.network.period;
            let age = (now_ms / 1000).saturating_sub(best.timestamp);
            (period > 0 && age > self.stall_periods * period).then_some(Stall {
                seconds: age,
                since: best.timestamp,
            })
        });
        if std::mem::take(&mut self.rewrite_news) {
            self.rewrite_at_ms = Some(now_ms);
        }
        let raised = self
            .rewrite_at_ms
            .filter(|at| now_ms.saturating_sub(*at) < self.rewrite_alarm_ms);
        if raised.is_none() {
            self.rewrite_at_ms = None;
            self.rewrites.clear();
        }
        let history_rewritten = raised.map(|at| HistoryRewrite {
            blocks: self.rewrites.clone(),
            total: self.rewrites_total,
            last_at_ms: at,
        });
        let alarms = Alarms {
            fork,
            stall,
            history_rewritten,
        };
        // The stall duration ticks every second; only its start/end is news.
        let news = alarms.fork != self.alarms.fork
            || alarms.stall.is_some() != self.alarms.stall.is_some()
            || alarms.history_rewritten != self.alarms.history_rewritten;
        self.alarms = alarms;
        if news {
            self.fanout.publish("alarms", &self.alarms);
        }
    }

    /// O(nodes × distinct head heights): for each height some node has as its
    /// head, the hashes online nodes hold there.
    fn find_fork(&self) -> Option<Fork> {
        let online: Vec<&NodeView> = self
            .nodes
            .values()
            .filter(|n| n.online && n.head.is_some())
            .collect();
        let mut heights: Vec<u64> = online
            .iter()
            .filter_map(|n| n.head.as_ref().map(|h| h.number))
            .collect();
        heights.sort_unstable();
        heights.dedup();
        for height in heights.into_iter().rev() {
            let mut hashes: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for node in &online {
                if let Some(hash) = self
                    .canonical
                    .get(node.id.as_str())
                    .and_then(|c| c.get(&height))
                {
                    hashes
                        .entry(hash.to_string())
                        .or_default()
                        .push(node.name.clone());
                }
            }
            if hashes.len() > 1 {
                for names in hashes.values_mut() {
                    names.sort();
                }
                return Some(Fork { height, hashes });
            }
        }
        None
    }
}

//! Fleet metrics at the aggregator's `/metrics`: the whole network at a glance.
//! Gauges are refreshed from the live view at scrape time (memory only).

use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::live::Live;
use crate::store::StoreHealth;

pub struct FleetMetrics {
    registry: Registry,
    nodes: IntGaugeVec,
    ready: IntGauge,
    node_head: IntGaugeVec,
    best: IntGauge,
    fork: IntGauge,
    stall: IntGauge,
    history_rewritten: IntGauge,
    rewritten_blocks: IntCounter,
    signer_last_sealed: IntGaugeVec,
    signer_missed: IntGaugeVec,
    reports: IntCounterVec,
    rejected: IntCounterVec,
    store_dropped: IntCounter,
    store_failed_commits: IntCounter,
    store_failing: IntGauge,
    restart_state: IntGaugeVec,
    restart_step: IntGauge,
}

impl Default for FleetMetrics {
    fn default() -> Self {
        let r = Registry::new();
        let gv = |name: &str, help: &str, labels: &[&str]| {
            let m = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            r.register(Box::new(m.clone())).expect("unique metric");
            m
        };
        let g = |name: &str, help: &str| {
            let m = IntGauge::new(name, help).expect("valid metric");
            r.register(Box::new(m.clone())).expect("unique metric");
            m
        };
        let c = |name: &str, help: &str| {
            let m = IntCounter::new(name, help).expect("valid metric");
            r.register(Box::new(m.clone())).expect("unique metric");
            m
        };
        let cv = |name: &str, help: &str, labels: &[&str]| {
            let m = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            r.register(Box::new(m.clone())).expect("unique metric");
            m
        };
        Self {
            nodes: gv("clique_fleet_nodes", "Known nodes by state.", &["state"]),
            ready: g(
                "clique_fleet_nodes_ready",
                "Online nodes whose agent reports ready.",
            ),
            node_head: gv(
                "clique_fleet_node_head_block",
                "Head block of each node.",
                &["node"],
            ),
            best: g(
                "clique_fleet_best_block",
                "Reference head: the highest block a majority of the signer nodes hold.",
            ),
            fork: g(
                "clique_fleet_fork",
                "1 while nodes disagree on the hash at one height.",
            ),
            stall: g(
                "clique_fleet_stall",
                "1 while no new block arrived for the stall threshold.",
            ),
            history_rewritten: g(
                "clique_fleet_history_rewritten",
                "1 while the history-rewritten alarm is raised: a confirmed block of the \
                 reference chain was replaced.",
            ),
            rewritten_blocks: c(
                "clique_fleet_rewritten_blocks_total",
                "Confirmed blocks of the reference chain replaced by another block.",
            ),
            signer_last_sealed: gv(
                "clique_fleet_signer_last_sealed_block",
                "Last block sealed by each signer.",
                &["signer"],
            ),
            signer_missed: gv(
                "clique_fleet_signer_missed_turns",
                "Missed turns of each signer over the recent blocks.",
                &["signer"],
            ),
            reports: cv(
                "clique_fleet_reports_total",
                "Accepted agent reports.",
                &["kind"],
            ),
            rejected: cv(
                "clique_fleet_rejected_reports_total",
                "Refused reports, websocket frames and connections by reason.",
                &["reason"],
            ),
            store_dropped: c(
                "clique_fleet_store_dropped_writes_total",
                "Block sightings and node stats not stored (queue full or batch not committed).",
            ),
            store_failed_commits: c(
                "clique_fleet_store_failed_commits_total",
                "Database batches that could not be committed (full disk, I/O errors).",
            ),
            store_failing: g(
                "clique_fleet_store_failing",
                "1 while the last database commit failed; writing resumes when it works again.",
            ),
            restart_state: gv(
                "clique_fleet_restart_plan",
                "1 for the state of the newest rolling restart plan (running, failed, aborted, done).",
                &["state"],
            ),
            restart_step: g(
                "clique_fleet_restart_step",
                "1-based step of the newest restart plan (0: none).",
            ),
            registry: r,
        }
    }
}

impl FleetMetrics {
    pub fn report(&self, kind: &str) {
        self.reports.with_label_values(&[kind]).inc();
    }

    pub fn rejected(&self, reason: &str) {
        self.rejected.with_label_values(&[reason]).inc();
    }

    /// The newest restart plan's state and step.
    pub fn restart(&self, plan: Option<&crate::restarts::Plan>) {
        for state in ["running", "failed", "aborted", "done"] {
            let now = plan.is_some_and(|p| {
                serde_json::to_value(p.state)
                    .ok()
                    .and_then(|v| v.as_str().map(|s| s == state))
                    == Some(true)
            });
            self.restart_state
                .with_label_values(&[state])
                .set(i64::from(now));
        }
        self.restart_step
            .set(plan.map_or(0, |p| (p.current + 1).min(p.steps.len()) as i64));
    }

    pub fn encode(&self, live: &Live, store: StoreHealth) -> String {
        // The store counts; the counters follow (they only ever grow).
        self.store_dropped.inc_by(
            store
                .dropped_writes
                .saturating_sub(self.store_dropped.get()),
        );
        self.store_failed_commits.inc_by(
            store
                .failed_commits
                .saturating_sub(self.store_failed_commits.get()),
        );
        self.store_failing.set(i64::from(store.failing));
        let online = live.nodes.values().filter(|n| n.online).count();
        self.nodes.with_label_values(&["online"]).set(online as i64);
        self.nodes
            .with_label_values(&["offline"])
            .set((live.nodes.len() - online) as i64);
        self.ready.set(
            live.nodes
                .values()
                .filter(|n| n.online && n.ready == Some(true))
                .count() as i64,
        );
        self.node_head.reset();
        for n in live.nodes.values() {
            if let Some(h) = &n.head {
                self.node_head
                    .with_label_values(&[&n.name])
                    .set(h.number as i64);
            }
        }
        self.best.set(live.best().map_or(0, |b| b.number as i64));
        self.fork.set(i64::from(live.alarms.fork.is_some()));
        self.stall.set(i64::from(live.alarms.stall.is_some()));
        self.history_rewritten
            .set(i64::from(live.alarms.history_rewritten.is_some()));
        self.rewritten_blocks.inc_by(
            live.rewrites_total()
                .saturating_sub(self.rewritten_blocks.get()),
        );
        // Only the current set: signers voted out disappear.
        self.signer_last_sealed.reset();
        self.signer_missed.reset();
        for s in live.signers() {
            self.signer_last_sealed
                .with_label_values(&[&s.address])
                .set(s.last_sealed.unwrap_or(0) as i64);
            self.signer_missed
                .with_label_values(&[&s.address])
                .set(s.missed_turns as i64);
        }
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use geth_wire::StatsReport;

    use super::*;
    use crate::live::{NetworkInfo, SignerNode};

    #[test]
    fn gauges_of_a_voted_out_signer_disappear() {
        let nodes: Vec<SignerNode> = ["0xa", "0xb", "0xc"]
            .iter()
            .enumerate()
            .map(|(i, s)| SignerNode {
                id: format!("n{i}"),
                name: format!("signer-{i}"),
                signer: (*s).into(),
            })
            .collect();
        let mut live = Live::new(
            NetworkInfo {
                name: "t".into(),
                chain_id: None,
                period: 1,
            },
            &["0xa".into(), "0xb".into(), "0xc".into()],
            nodes,
            10,
        );
        let metrics = FleetMetrics::default();
        assert!(metrics
            .encode(&live, Default::default())
            .contains(r#"signer="0xc""#));
        let without_c = StatsReport {
            signers: Some(vec!["0xa".into(), "0xb".into()]),
            ..Default::default()
        };
        live.on_stats("n0", &without_c, 1, None);
        live.on_stats("n1", &without_c, 1, None);
        let text = metrics.encode(&live, Default::default());
        assert!(!text.contains(r#"signer="0xc""#), "{text}");
        assert!(text.contains(r#"signer="0xa""#), "{text}");
    }

    #[test]
    fn the_alert_rules_use_exported_fleet_metrics() {
        let text = FleetMetrics::default().encode(&Live::unconfigured(), Default::default());
        let rules = include_str!("../../monitoring/alerts.yml");
        let mut used = 0;
        for (i, _) in rules.match_indices("clique_fleet_") {
            let name: String = rules[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} is used but not exported"
            );
            used += 1;
        }
        assert!(used > 0);
        assert!(text.contains("clique_fleet_history_rewritten 0"), "{text}");
        assert!(
            text.contains("clique_fleet_rewritten_blocks_total 0"),
            "{text}"
        );
    }

    #[test]
    fn store_health_is_exported_and_counters_only_grow() {
        let live = Live::unconfigured();
        let metrics = FleetMetrics::default();
        let failing = StoreHealth {
            dropped_writes: 3,
            failed_commits: 2,
            error_logs: 1,
            failing: true,
        };
        let text = metrics.encode(&live, failing);
        for line in [
            "clique_fleet_store_dropped_writes_total 3",
            "clique_fleet_store_failed_commits_total 2",
            "clique_fleet_store_failing 1",
        ] {
            assert!(text.contains(line), "{line} missing in {text}");
        }
        let recovered = StoreHealth {
            dropped_writes: 5,
            failing: false,
            ..failing
        };
        let text = metrics.encode(&live, recovered);
        assert!(
            text.contains("clique_fleet_store_dropped_writes_total 5"),
            "{text}"
        );
        assert!(text.contains("clique_fleet_store_failing 0"), "{text}");
    }
}

//! Prometheus series of the signing service.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

pub struct Metrics {
    pub registry: Registry,
    /// outcome: signed, pending, rejected.
    pub requests: IntCounterVec,
    pub rejections: IntCounterVec,
    pub reorgs: IntCounterVec,
    pub incidents: IntCounterVec,
    pub cache_hits: IntCounterVec,
    pub last_signed_nonce: IntGaugeVec,
    pub last_signed_block: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let requests = counter(
            "bridge_requests_total",
            "Signing requests by outcome",
            &["direction", "outcome"],
        )?;
        let rejections = counter(
            "bridge_rejections_total",
            "Rejected signing requests by reason",
            &["direction", "reason"],
        )?;
        let reorgs = counter(
            "bridge_reorgs_total",
            "Deposits whose block was no longer canonical",
            &["direction"],
        )?;
        let incidents = counter(
            "bridge_incidents_total",
            "Deposits re-asked with another digest or block hash than signed (alert on any)",
            &["direction"],
        )?;
        let cache_hits = counter(
            "bridge_cache_hits_total",
            "Signatures served from the cache",
            &["direction"],
        )?;
        let gauge = |name: &str, help: &str| -> Result<IntGaugeVec, prometheus::Error> {
            let g = IntGaugeVec::new(Opts::new(name, help), &["direction"])?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let last_signed_nonce = gauge(
            "bridge_last_signed_nonce",
            "Deposit nonce of the last signature",
        )?;
        let last_signed_block = gauge(
            "bridge_last_signed_block",
            "Source block of the last signed deposit",
        )?;
        Ok(Self {
            registry,
            requests,
            rejections,
            reorgs,
            incidents,
            cache_hits,
            last_signed_nonce,
            last_signed_block,
        })
    }

    pub fn render(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

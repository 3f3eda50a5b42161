//! Gateway metrics, exported with the fleet metrics at the aggregator's
//! `/metrics`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

pub struct GatewayMetrics {
    registry: Registry,
    calls: IntCounterVec,
    duration: HistogramVec,
    upstream_failures: IntCounterVec,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        let registry = Registry::new();
        let calls = IntCounterVec::new(
            Opts::new(
                "clique_gateway_calls_total",
                "JSON-RPC calls at the gateway by method and outcome (ok, error: the node \
                 answered an error, refused: a gateway rule, limited: body, batch or rate \
                 limit, unavailable: no ready node answered).",
            ),
            &["method", "outcome"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "clique_gateway_request_duration_seconds",
                "Time to answer one HTTP request at the gateway, by transport.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
            ]),
            &["transport"],
        )
        .expect("valid metric");
        let upstream_failures = IntCounterVec::new(
            Opts::new(
                "clique_gateway_upstream_failures_total",
                "Requests a node failed to answer (then retried on another node when safe).",
            ),
            &["node"],
        )
        .expect("valid metric");
        for m in [
            Box::new(calls.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(upstream_failures.clone()),
        ] {
            registry.register(m).expect("unique metric");
        }
        Self {
            registry,
            calls,
            duration,
            upstream_failures,
        }
    }
}

impl GatewayMetrics {
    /// Counts one call; methods outside the allow-list share one label so a
    /// client cannot grow the label set.
    pub fn call(&self, method: &str, allowed: bool, outcome: &str) {
        let method = if allowed { method } else { "other" };
        self.calls.with_label_values(&[method, outcome]).inc();
    }

    pub fn observe(&self, transport: &str, seconds: f64) {
        self.duration
            .with_label_values(&[transport])
            .observe(seconds);
    }

    pub fn upstream_failure(&self, node: &str) {
        self.upstream_failures.with_label_values(&[node]).inc();
    }

    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

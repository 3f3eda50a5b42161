//! The nodes behind the gateway: the non-signer nodes of `network.json`, used
//! only while their agent reports them online and ready.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use alloy::primitives::Address;
use std::time::Duration;

use bytes::Bytes;
use geth_wire::network::{Network, Role};
use http_body_util::{BodyExt, Full};

use crate::live::Live;
use crate::registry::enode_address;

/// One node the gateway may call.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The node's id in the live view (its node key's address).
    pub id: String,
    pub name: String,
    /// Parsed once: the gateway's hot path only clones it.
    pub http: hyper::Uri,
    pub ws: String,
}

/// What the live view says about the nodes right now.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Ready non-signer nodes, in the order to try them.
    pub nodes: Vec<Arc<Upstream>>,
    /// The highest gas price floor the ready nodes enforce (wei); `None`
    /// while one of them has not reported it.
    pub floor_wei: Option<u64>,
    /// The highest head among them.
    pub head: Option<u64>,
}

/// The non-signer nodes of the network: the RPC URL is the host of the node's
/// enode and its `ports.http` (the operator's file, never a node's claim).
pub fn from_network(network: &Network) -> Vec<Arc<Upstream>> {
    network
        .nodes
        .iter()
        .filter(|n| n.role != Role::Signer && n.signer.is_none())
        .filter_map(|n| {
            let address: Address = enode_address(&n.enode)?;
            let host = n.enode.split('@').nth(1)?.rsplit_once(':')?.0;
            let host = host.split('?').next()?;
            let http = format!("http://{host}:{}", n.ports.http).parse().ok()?;
            Some(Arc::new(Upstream {
                id: format!("{address:#x}"),
                name: n.name.clone(),
                http,
                ws: format!("ws://{host}:{}", n.ports.http),
            }))
        })
        .collect()
}

/// Round-robin over the ready nodes.
#[derive(Default)]
pub struct Rotation(AtomicUsize);

impl Rotation {
    pub fn snapshot(&self, all: &[Arc<Upstream>], live: &Live) -> Snapshot {
        self.turn(eligible(all, live))
    }

    /// The next turn: the ready nodes starting with the next one.
    pub fn turn(&self, mut snap: Snapshot) -> Snapshot {
        if !snap.nodes.is_empty() {
            let start = self.0.fetch_add(1, Ordering::Relaxed) % snap.nodes.len();
            snap.nodes.rotate_left(start);
        }
        snap
    }
}

/// The ready non-signer nodes in network order, their floor and head.
pub fn eligible(all: &[Arc<Upstream>], live: &Live) -> Snapshot {
    {
        let mut nodes = Vec::new();
        let mut floor = Some(0u64);
        let mut head: Option<u64> = None;
        for up in all {
            let Some(view) = live.nodes.get(&up.id) else {
                continue;
            };
            if !view.online || view.ready != Some(true) || view.is_signer == Some(true) {
                continue;
            }
            let price = view
                .gas_price
                .as_deref()
                .and_then(|p| p.parse::<u64>().ok());
            floor = match (floor, price) {
                (Some(f), Some(p)) => Some(f.max(p)),
                _ => None,
            };
            if let Some(h) = &view.head {
                head = Some(head.map_or(h.number, |x| x.max(h.number)));
            }
            nodes.push(Arc::clone(up));
        }
        if nodes.is_empty() {
            floor = None;
        }
        Snapshot {
            nodes,
            floor_wei: floor,
            head,
        }
    }
}

/// How a call to a node failed.
#[derive(Debug)]
pub struct Failure {
    /// The request may have reached the node (never retry a write then).
    pub maybe_sent: bool,
    pub reason: String,
}

/// The HTTP/1 client for the nodes (keep-alive pool, plain hyper: the
/// gateway's hot path).
pub type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

pub fn client() -> Client {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A node that takes longer than this has failed the call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// POSTs a JSON-RPC body to one node.
pub async fn post(client: &Client, up: &Upstream, body: Bytes) -> Result<Bytes, Failure> {
    let request = hyper::Request::post(up.http.clone())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| Failure {
            maybe_sent: false,
            reason: e.to_string(),
        })?;
    let call = async {
        let response = client.request(request).await.map_err(|e| Failure {
            maybe_sent: !e.is_connect(),
            reason: e.to_string(),
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(Failure {
                maybe_sent: true,
                reason: format!("HTTP {status}"),
            });
        }
        response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| Failure {
                maybe_sent: true,
                reason: e.to_string(),
            })
    };
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(Failure {
                maybe_sent: true,
                reason: format!("no answer within {}s", CALL_TIMEOUT.as_secs()),
            })
        })
}

#[cfg(test)]
mod tests {
    use geth_wire::StatsReport;

    use super::*;
    use crate::live::NetworkInfo;

    fn upstream(id: &str) -> Arc<Upstream> {
        Arc::new(Upstream {
            id: id.into(),
            name: id.into(),
            http: format!("http://{id}").parse().unwrap(),
            ws: format!("ws://{id}"),
        })
    }

    #[test]
    fn only_online_ready_non_signers_are_used_in_turn() {
        let mut live = Live::new(
            NetworkInfo {
                name: "t".into(),
                chain_id: Some(1),
                period: 1,
            },
            &[],
            Vec::new(),
            10,
        );
        let stats = |ready: bool, signer: bool| StatsReport {
            ready,
            is_signer: Some(signer),
            min_gas_price_wei: Some(0),
            ..Default::default()
        };
        live.on_stats("a", &stats(true, false), 1, None);
        live.on_stats("b", &stats(true, false), 1, None);
        live.on_stats("c", &stats(false, false), 1, None);
        live.on_stats("d", &stats(true, true), 1, None);
        let all: Vec<Arc<Upstream>> = ["a", "b", "c", "d", "e"].map(upstream).to_vec();
        let rotation = Rotation::default();
        let first = rotation.snapshot(&all, &live);
        let names: Vec<&str> = first.nodes.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(first.floor_wei, Some(0));
        let second = rotation.snapshot(&all, &live);
        assert_eq!(second.nodes[0].name, "b", "spread across the ready nodes");
        live.on_stats(
            "b",
            &StatsReport {
                min_gas_price_wei: None,
                ..stats(true, false)
            },
            2,
            None,
        );
        assert_eq!(rotation.snapshot(&all, &live).floor_wei, None);
    }

    #[test]
    fn urls_come_from_the_enode_host_and_http_port() {
        let id = "ab".repeat(64);
        let json = format!(
            r#"{{"name":"n","chain_id":1,"period":1,"nodes":[
              {{"name":"v1","role":"validator","enode":"enode://{id}@10.0.0.5:30303","ports":{{"p2p":30303,"http":8545,"agent":9101}}}},
              {{"name":"s1","role":"signer","signer":"0x0000000000000000000000000000000000000001","enode":"enode://{id}@10.0.0.6:30303","ports":{{"p2p":30303,"http":8545,"agent":9101}}}}]}}"#
        );
        let network: Network = serde_json::from_str(&json).unwrap();
        let ups = from_network(&network);
        assert_eq!(ups.len(), 1, "signers serve no RPC");
        assert_eq!(ups[0].http.to_string(), "http://10.0.0.5:8545/");
        assert_eq!(ups[0].ws, "ws://10.0.0.5:8545");
    }
}

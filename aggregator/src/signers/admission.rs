//! Admission of joined nodes: `POST /api/nodes/admit`, `POST /api/nodes/remove`
//! and `GET /api/nodes` (admin token). An admitted node is persisted in the
//! store before the answer, and its signed reports are accepted from then on;
//! a removed one gets 401 again. The nodes of network.json are always trusted
//! and cannot be removed here.

use std::sync::Arc;

use alloy::primitives::Address;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::ingest::error;
use crate::registry::{enode_address, KnownNode, Registry};
use crate::restarts::api::unauthorized;
use crate::state::App;
use crate::store::{Store, StoreError};

/// Longest node name accepted.
const MAX_NAME: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("{0:?} is neither an enode://<128 hex>@host:port nor a 0x node address")]
    BadNode(String),
    #[error("name must be 1 to {MAX_NAME} letters, digits, '-', '_' or '.'")]
    BadName,
    #[error("{0:#x} is a node of network.json: always admitted, not removable")]
    Listed(Address),
    #[error("{0:#x} is not an admitted node")]
    NotAdmitted(Address),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl AdmissionError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadNode(_) | Self::BadName => StatusCode::BAD_REQUEST,
            Self::Listed(_) => StatusCode::CONFLICT,
            Self::NotAdmitted(_) => StatusCode::NOT_FOUND,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A node named by its enode (whose key gives the address) or its address.
pub fn parse_node(text: &str) -> Result<(Address, Option<String>), AdmissionError> {
    let text = text.trim();
    if text.starts_with("enode://") {
        let address = enode_address(text).ok_or_else(|| AdmissionError::BadNode(text.into()))?;
        let has_port = text
            .split_once('@')
            .and_then(|(_, at)| at.rsplit_once(':'))
            .is_some_and(|(host, port)| {
                !host.is_empty()
                    && port
                        .split('?')
                        .next()
                        .is_some_and(|p| p.parse::<u16>().is_ok())
            });
        if !has_port {
            return Err(AdmissionError::BadNode(text.into()));
        }
        return Ok((address, Some(text.to_owned())));
    }
    let hex = text.strip_prefix("0x").unwrap_or(text);
    if hex.len() != 40 {
        return Err(AdmissionError::BadNode(text.into()));
    }
    let address = text
        .parse()
        .map_err(|_| AdmissionError::BadNode(text.into()))?;
    Ok((address, None))
}

fn check_name(name: &str) -> Result<(), AdmissionError> {
    let ok = (1..=MAX_NAME).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    ok.then_some(()).ok_or(AdmissionError::BadName)
}

/// One admitted node, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admitted {
    pub address: String,
    pub name: String,
    #[serde(default)]
    pub enode: String,
}

impl Admitted {
    fn new(address: Address, node: &KnownNode) -> Self {
        Self {
            address: format!("{address:#x}"),
            name: node.name.clone(),
            enode: node.enode.clone(),
        }
    }
}

/// Admits `node` (enode or address), named `name` or `node-<address prefix>`.
pub fn admit(
    registry: &Registry,
    store: &Store,
    node: &str,
    name: Option<&str>,
) -> Result<Admitted, AdmissionError> {
    let (address, enode) = parse_node(node)?;
    if registry.is_listed(&address) {
        return Err(AdmissionError::Listed(address));
    }
    let name = match name {
        Some(name) => {
            check_name(name)?;
            name.to_owned()
        }
        None => format!("node-{}", &format!("{address:x}")[..8]),
    };
    let known = KnownNode {
        name,
        enode: enode.unwrap_or_default(),
        signer: None,
    };
    store.admit_node(&format!("{address:#x}"), &known.name, &known.enode)?;
    registry.admit(address, known.clone());
    tracing::info!(node = %format!("{address:#x}"), name = %known.name, "node admitted");
    Ok(Admitted::new(address, &known))
}

/// Revokes the admission of `node` (enode or address).
pub fn remove(registry: &Registry, store: &Store, node: &str) -> Result<Admitted, AdmissionError> {
    let (address, _) = parse_node(node)?;
    if registry.is_listed(&address) {
        return Err(AdmissionError::Listed(address));
    }
    let stored = store.remove_node(&format!("{address:#x}"))?;
    match registry.revoke(&address) {
        Some(known) => {
            tracing::info!(node = %format!("{address:#x}"), name = %known.name, "node admission revoked");
            Ok(Admitted::new(address, &known))
        }
        None if stored => Ok(Admitted {
            address: format!("{address:#x}"),
            name: String::new(),
            enode: String::new(),
        }),
        None => Err(AdmissionError::NotAdmitted(address)),
    }
}

/// Loads the stored admissions into the registry (at start).
pub fn restore(registry: &Registry, store: &Store) -> Result<usize, StoreError> {
    let mut n = 0;
    for (address, name, enode) in store.admitted_nodes()? {
        match address.parse::<Address>() {
            Ok(a) => {
                registry.admit(
                    a,
                    KnownNode {
                        name,
                        enode,
                        signer: None,
                    },
                );
                n += 1;
            }
            Err(_) => tracing::warn!(%address, "stored admission with a bad address skipped"),
        }
    }
    Ok(n)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRequest {
    /// `enode://…` or the 0x address of the node key.
    pub node: String,
    #[serde(default)]
    pub name: Option<String>,
}

fn request(body: &[u8]) -> Result<NodeRequest, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"node\": \"<enode|address>\"}}: {e}"),
        ))
    })
}

fn answer(result: Result<Admitted, AdmissionError>) -> Response {
    match result {
        Ok(admitted) => (StatusCode::OK, Json(admitted)).into_response(),
        Err(e) => error(e.status(), e.to_string()),
    }
}

/// `POST /api/nodes/admit`.
pub async fn admit_route(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = unauthorized(&app, &headers) {
        return r;
    }
    match request(&body) {
        Ok(r) => answer(admit(&app.registry, &app.store, &r.node, r.name.as_deref())),
        Err(r) => *r,
    }
}

/// `POST /api/nodes/remove`.
pub async fn remove_route(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = unauthorized(&app, &headers) {
        return r;
    }
    match request(&body) {
        Ok(r) if r.name.is_some() => error(StatusCode::BAD_REQUEST, "remove takes no name"),
        Ok(r) => answer(remove(&app.registry, &app.store, &r.node)),
        Err(r) => *r,
    }
}

/// `GET /api/nodes`: the admitted nodes.
pub async fn list_route(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&app, &headers) {
        return r;
    }
    let nodes: Vec<Admitted> = app
        .registry
        .admitted()
        .iter()
        .map(|(a, n)| Admitted::new(*a, n))
        .collect();
    (StatusCode::OK, Json(nodes)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENODE: &str = "enode://a979fb575495b8d6db44f750317d0f4622bf4c2aa3365d6af7c284339968eef29b69ad0dce72a4d8db5ebb4968de0e3bec910127f134779fbcb0cb6d3331163c@127.0.0.1:30303";

    #[test]
    fn nodes_are_named_by_enode_or_address() {
        let (address, enode) = parse_node(ENODE).unwrap();
        assert_eq!(enode.as_deref(), Some(ENODE));
        let (again, none) = parse_node(&format!(" {address:#x} ")).unwrap();
        assert_eq!((again, none), (address, None));
        for bad in [
            "",
            "0x1234",
            "enode://abcd@127.0.0.1:1",
            &ENODE.replace(":30303", ""),
            &format!("{address:#x}00"),
            "zz",
        ] {
            assert!(parse_node(bad).is_err(), "{bad}");
        }
        assert!(check_name("joined-1.a_b").is_ok());
        assert!(check_name("").is_err() && check_name("a b").is_err());
        assert!(check_name(&"x".repeat(MAX_NAME + 1)).is_err());
    }

    #[tokio::test]
    async fn admissions_persist_and_listed_nodes_cannot_be_touched() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db"), 100).unwrap();
        let mut registry = Registry::default();
        let listed = Address::repeat_byte(7);
        registry.insert(
            listed,
            KnownNode {
                name: "signer-1".into(),
                enode: String::new(),
                signer: None,
            },
        );
        let admitted = admit(&registry, &store, ENODE, None).unwrap();
        let (address, _) = parse_node(ENODE).unwrap();
        assert_eq!(admitted.name, format!("node-{}", &admitted.address[2..10]));
        assert!(registry.get(&address).is_some());
        assert!(matches!(
            admit(&registry, &store, &format!("{listed:#x}"), None),
            Err(AdmissionError::Listed(_))
        ));
        assert!(matches!(
            remove(&registry, &store, &format!("{listed:#x}")),
            Err(AdmissionError::Listed(_))
        ));
        assert!(matches!(
            admit(&registry, &store, ENODE, Some("bad name")),
            Err(AdmissionError::BadName)
        ));

        // A restarted aggregator knows the admission from the store.
        let fresh = Registry::default();
        assert_eq!(restore(&fresh, &store).unwrap(), 1);
        assert_eq!(fresh.get(&address).unwrap().enode, ENODE);

        remove(&registry, &store, &format!("{address:#x}")).unwrap();
        assert!(registry.get(&address).is_none());
        assert!(matches!(
            remove(&registry, &store, ENODE),
            Err(AdmissionError::NotAdmitted(_))
        ));
        let fresh = Registry::default();
        assert_eq!(restore(&fresh, &store).unwrap(), 0);
    }
}

//! Growing the network: nodes that joined after network.json was written are
//! trusted only once an operator admits their node key (`admission`, the
//! `geth-aggregator nodes` client in `cli`).

pub mod admission;
pub mod cli;

//! One ethstats frame, `{"emit": [topic, payload]}`, read in a single pass
//! into what the aggregator keeps: no JSON tree is built, and what is not
//! needed (a block's transactions and uncles, `history`) is skipped without
//! being stored. Numbers arrive as JSON numbers or as decimal strings.

use std::fmt;

use geth_wire::BlockReport;
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// What a frame says, by topic.
#[derive(Debug)]
pub enum Frame {
    Hello(Hello),
    /// `None`: a block without the fields every block has.
    Block(Option<BlockReport>),
    Stats(Stats),
    Pending(Option<u64>),
    Latency(Option<u64>),
    /// The client's time, echoed back in `node-pong`.
    NodePing(Value),
    /// `history`, `ready` and anything newer: not needed.
    Other,
}

impl Frame {
    /// `None` for anything that is not an ethstats frame.
    pub fn parse(text: &str) -> Option<Frame> {
        serde_json::from_str::<Envelope>(text).ok().map(|e| e.emit)
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Hello {
    pub id: Option<String>,
    pub secret: Option<String>,
    #[serde(default)]
    pub info: HelloInfo,
}

#[derive(Debug, Default, Deserialize)]
pub struct HelloInfo {
    pub name: Option<String>,
    /// The client's version string, e.g. `Geth/v1.13.15-stable/linux-amd64/go1.22`.
    pub node: Option<String>,
}

impl Hello {
    /// geth names itself in `info.name`; older reporters only in `id`.
    pub fn name(&self) -> Option<&str> {
        self.info.name.as_deref().or(self.id.as_deref())
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
pub struct Stats {
    #[serde(deserialize_with = "lenient_u64")]
    pub peers: Option<u64>,
    pub mining: Option<bool>,
    #[serde(deserialize_with = "lenient_u64")]
    pub uptime: Option<u64>,
    /// geth's suggested price (`eth_gasPrice`), in wei.
    #[serde(rename = "gasPrice", deserialize_with = "lenient_u64")]
    pub gas_price: Option<u64>,
}

#[derive(Deserialize)]
struct Envelope {
    emit: Frame,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Topic {
    Hello,
    Block,
    Stats,
    Pending,
    Latency,
    NodePing,
    #[serde(other)]
    Other,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct BlockPayload {
    block: Option<GethBlock>,
}

/// The fields of geth's `blockStats` that a [`BlockReport`] needs.
#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct GethBlock {
    #[serde(deserialize_with = "lenient_u64")]
    number: Option<u64>,
    hash: Option<String>,
    parent_hash: Option<String>,
    #[serde(deserialize_with = "lenient_u64")]
    timestamp: Option<u64>,
    miner: Option<String>,
    #[serde(deserialize_with = "lenient_u64")]
    difficulty: Option<u64>,
    #[serde(deserialize_with = "lenient_u64")]
    gas_used: Option<u64>,
    #[serde(deserialize_with = "lenient_u64")]
    gas_limit: Option<u64>,
    /// Counted, not kept (a vector of a zero-sized type allocates nothing).
    transactions: Option<Vec<IgnoredAny>>,
}

impl GethBlock {
    /// The report, normalised as every block report is (`validate`).
    fn report(self, seen_at_ms: u64) -> Option<BlockReport> {
        let number = self.number?;
        let mut report = BlockReport {
            number,
            hash: self.hash?,
            parent_hash: self.parent_hash?,
            timestamp: self.timestamp?,
            // The genesis has no sealer (geth reports 0x0).
            signer: self.miner.filter(|_| number > 0),
            difficulty: self.difficulty.unwrap_or(0),
            transactions: self.transactions.map_or(0, |t| t.len() as u64),
            gas_used: self.gas_used.unwrap_or(0),
            gas_limit: self.gas_limit.unwrap_or(0),
            seen_at_ms,
        };
        crate::validate::normalise(&mut report);
        Some(report)
    }
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct StatsPayload {
    stats: Stats,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct PendingPayload {
    stats: PendingStats,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct PendingStats {
    #[serde(deserialize_with = "lenient_u64")]
    pending: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct LatencyPayload {
    #[serde(deserialize_with = "lenient_u64")]
    latency: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PingPayload {
    client_time: Value,
}

impl<'de> Deserialize<'de> for Frame {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(FrameVisitor)
    }
}

struct FrameVisitor;

impl<'de> Visitor<'de> for FrameVisitor {
    type Value = Frame;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[topic, payload]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Frame, A::Error> {
        let topic: Topic = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        // A missing or `null` payload reads as an empty one.
        fn payload<'de, A: SeqAccess<'de>, T: Deserialize<'de> + Default>(
            seq: &mut A,
        ) -> Result<T, A::Error> {
            Ok(seq
                .next_element::<Option<T>>()?
                .flatten()
                .unwrap_or_default())
        }
        let frame = match topic {
            Topic::Hello => Frame::Hello(payload(&mut seq)?),
            Topic::Block => Frame::Block(
                payload::<_, BlockPayload>(&mut seq)?
                    .block
                    .and_then(|b| b.report(crate::state::now_ms())),
            ),
            Topic::Stats => Frame::Stats(payload::<_, StatsPayload>(&mut seq)?.stats),
            Topic::Pending => Frame::Pending(payload::<_, PendingPayload>(&mut seq)?.stats.pending),
            Topic::Latency => Frame::Latency(payload::<_, LatencyPayload>(&mut seq)?.latency),
            Topic::NodePing => Frame::NodePing(payload::<_, PingPayload>(&mut seq)?.client_time),
            Topic::Other => Frame::Other,
        };
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(frame)
    }
}

/// A count or amount: a JSON number or a decimal string; anything else that
/// is not a number (a float, a negative, text) reads as unknown.
fn lenient_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    struct Lenient;
    impl<'de> Visitor<'de> for Lenient {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number or a decimal string")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(u64::try_from(v).ok())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(v.parse().ok())
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    deserializer.deserialize_any(Lenient)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(frame: &str) -> Option<BlockReport> {
        match Frame::parse(frame) {
            Some(Frame::Block(b)) => b,
            other => panic!("not a block frame: {other:?}"),
        }
    }

    #[test]
    fn geths_frames_read_into_what_is_kept() {
        // As geth 1.13's reporter writes them (trimmed hashes).
        let b = block(
            r#"{"emit":["block",{"id":"geth-1","block":{"number":7,"hash":"0xaa","parentHash":"0xbb",
            "timestamp":100,"miner":"0xAbC","gasUsed":0,"gasLimit":30000000,"difficulty":"2",
            "totalDifficulty":"15","transactions":[{"hash":"0x1"},{"hash":"0x2"}],
            "transactionsRoot":"0xcc","stateRoot":"0xdd","uncles":[]}}]}"#,
        )
        .unwrap();
        assert_eq!(
            (b.number, b.difficulty, b.transactions, b.gas_limit),
            (7, 2, 2, 30_000_000)
        );
        assert_eq!(b.signer.as_deref(), Some("0xabc"));
        assert_eq!((b.hash.as_str(), b.parent_hash.as_str()), ("0xaa", "0xbb"));

        let genesis = block(
            r#"{"emit":["block",{"block":{"number":"0","hash":"0x1","parentHash":"0x0","timestamp":"5","miner":"0x0"}}]}"#,
        )
        .unwrap();
        assert_eq!((genesis.number, genesis.timestamp), (0, 5));
        assert_eq!(genesis.signer, None, "the genesis has no sealer");

        let Some(Frame::Hello(hello)) = Frame::parse(
            r#"{"emit":["hello",{"id":"geth-1","info":{"name":"geth-1","node":"Geth/v1.13.15","os":"linux"},"secret":"s"}]}"#,
        ) else {
            panic!("hello")
        };
        assert_eq!(hello.name(), Some("geth-1"));
        assert_eq!(hello.secret.as_deref(), Some("s"));
        assert_eq!(hello.info.node.as_deref(), Some("Geth/v1.13.15"));

        let Some(Frame::Stats(stats)) = Frame::parse(
            r#"{"emit":["stats",{"id":"geth-1","stats":{"active":true,"syncing":false,"mining":true,"hashrate":0,"peers":2,"gasPrice":1000000000,"uptime":100}}]}"#,
        ) else {
            panic!("stats")
        };
        assert_eq!(
            (stats.peers, stats.mining, stats.uptime, stats.gas_price),
            (Some(2), Some(true), Some(100), Some(1_000_000_000))
        );
        assert!(matches!(
            Frame::parse(r#"{"emit":["pending",{"id":"g","stats":{"pending":3}}]}"#),
            Some(Frame::Pending(Some(3)))
        ));
        assert!(matches!(
            Frame::parse(r#"{"emit":["latency",{"id":"g","latency":"12"}]}"#),
            Some(Frame::Latency(Some(12)))
        ));
        let Some(Frame::NodePing(time)) = Frame::parse(
            r#"{"emit":["node-ping",{"id":"g","clientTime":"2026-12-04T03:00:00Z"}]}"#,
        ) else {
            panic!("node-ping")
        };
        assert_eq!(time, Value::from("2026-12-04T03:00:00Z"));
        assert!(matches!(
            Frame::parse(r#"{"emit":["history",{"id":"g","history":[{"number":1}]}]}"#),
            Some(Frame::Other)
        ));
        assert!(matches!(
            Frame::parse(r#"{"emit":["ready"]}"#),
            Some(Frame::Other)
        ));
    }

    #[test]
    fn what_is_not_a_frame_or_not_a_block_is_told_apart() {
        for garbage in [
            "garbage",
            "",
            "null",
            r#"{"emit":[]}"#,
            r#"{"emit":"block"}"#,
            r#"{"emit":[7]}"#,
            r#"{"nothing":["hello",{}]}"#,
            r#"{"emit":["block",{"block":{"number":1,"hash":7}}]}"#,
            r#"{"emit":["block",{"block":{"number":1}}"#,
        ] {
            assert!(Frame::parse(garbage).is_none(), "{garbage}");
        }
        for incomplete in [
            r#"{"emit":["block"]}"#,
            r#"{"emit":["block",null]}"#,
            r#"{"emit":["block",{"block":{"number":1}}]}"#,
            r#"{"emit":["block",{"block":{"number":-1,"hash":"0x1","parentHash":"0x0","timestamp":1}}]}"#,
            r#"{"emit":["block",{"block":{"number":1.5,"hash":"0x1","parentHash":"0x0","timestamp":1}}]}"#,
        ] {
            assert!(block(incomplete).is_none(), "{incomplete}");
        }
        // Numbers that are not counts read as unknown rather than as 0.
        let Some(Frame::Stats(stats)) = Frame::parse(
            r#"{"emit":["stats",{"stats":{"peers":"many","uptime":-3,"gasPrice":null}}]}"#,
        ) else {
            panic!("stats")
        };
        assert_eq!(
            (stats.peers, stats.uptime, stats.gas_price),
            (None, None, None)
        );
    }
}

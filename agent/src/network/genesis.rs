//! Clique genesis templates and the rules geth v1.13 applies to them.
//!
//! The templates stop at Berlin on purpose: London burns a base fee that never
//! reaches zero, and these networks promise zero gas prices (see docs/GAS.md).

use alloy::primitives::{Address, U256};
use serde_json::{json, Map, Value};

use super::NetworkError;

/// A built-in template: its name and its JSON text (from `genesis/`).
#[derive(Debug, Clone, Copy)]
pub struct Template {
    pub name: &'static str,
    pub text: &'static str,
}

pub const TEMPLATES: [Template; 2] = [
    Template {
        name: "testnetsidechain",
        text: include_str!("../../../genesis/testnetsidechain.json"),
    },
    Template {
        name: "mainnetsidechain",
        text: include_str!("../../../genesis/mainnetsidechain.json"),
    },
];

pub fn template(name: &str) -> Option<Template> {
    TEMPLATES.iter().copied().find(|t| t.name == name)
}

/// Forks clique cannot run in geth v1.13 (and post-merge settings).
const FORBIDDEN_CONFIG_KEYS: [&str; 5] = [
    "shanghaiTime",
    "cancunTime",
    "pragueTime",
    "terminalTotalDifficulty",
    "terminalTotalDifficultyPassed",
];

/// Checks that a genesis is a clique genesis geth v1.13 can seal.
pub fn validate(genesis: &Value) -> Result<(), NetworkError> {
    let config = genesis
        .get("config")
        .and_then(Value::as_object)
        .ok_or_else(|| NetworkError::Genesis("no \"config\" object".into()))?;
    if config.get("chainId").and_then(Value::as_u64).is_none() {
        return Err(NetworkError::Genesis(
            "config.chainId is missing or not a number".into(),
        ));
    }
    if config.get("clique").and_then(Value::as_object).is_none() {
        return Err(NetworkError::Genesis(
            "config.clique is missing: not a clique genesis".into(),
        ));
    }
    if let Some(key) = FORBIDDEN_CONFIG_KEYS
        .iter()
        .find(|k| config.contains_key(**k))
    {
        return Err(NetworkError::Genesis(format!(
            "config.{key} is set: geth v1.13 clique supports forks up to London only"
        )));
    }
    if has_london(genesis) {
        // The generated agents apply a zero gas price floor (docs/GAS.md).
        return Err(NetworkError::Genesis(
            "config.londonBlock is set: London burns a base fee in every block (never below \
             7 wei), so the zero gas price the generated nodes apply cannot work; remove \
             londonBlock (Berlin at most)"
                .into(),
        ));
    }
    Ok(())
}

/// Whether the genesis activates London (a burned base fee: no zero-gas chain).
pub fn has_london(genesis: &Value) -> bool {
    genesis
        .pointer("/config/londonBlock")
        .is_some_and(|v| !v.is_null())
}

/// Clique `extraData`: 32 bytes of vanity, the signer addresses, 65 bytes of
/// (empty) seal.
pub fn clique_extra_data(signers: &[Address]) -> String {
    let mut signers = signers.to_vec();
    // geth sorts the initial signer list; keep the file canonical.
    signers.sort();
    let mut extra = vec![0u8; 32];
    for signer in &signers {
        extra.extend_from_slice(signer.as_slice());
    }
    extra.extend_from_slice(&[0u8; 65]);
    format!("0x{}", hex::encode(extra))
}

/// Fills a template: block period, signers and funded accounts.
pub fn build(
    template: &Value,
    period: u64,
    signers: &[Address],
    funded: &[(Address, U256)],
) -> Result<Value, NetworkError> {
    validate(template)?;
    if signers.is_empty() {
        return Err(NetworkError::Genesis(
            "a clique network needs at least one signer".into(),
        ));
    }
    let mut genesis = template.clone();
    genesis["config"]["clique"]["period"] = json!(period);
    genesis["extraData"] = json!(clique_extra_data(signers));
    let alloc = genesis
        .as_object_mut()
        .expect("validated above")
        .entry("alloc")
        .or_insert_with(|| Value::Object(Map::new()));
    let alloc = alloc
        .as_object_mut()
        .ok_or_else(|| NetworkError::Genesis("\"alloc\" is not an object".into()))?;
    for (address, balance) in funded {
        alloc.insert(
            format!("{address:#x}"),
            json!({ "balance": format!("{balance:#x}") }),
        );
    }
    Ok(genesis)
}

pub fn chain_id(genesis: &Value) -> Option<u64> {
    genesis.pointer("/config/chainId").and_then(Value::as_u64)
}

pub fn period(genesis: &Value) -> Option<u64> {
    genesis
        .pointer("/config/clique/period")
        .and_then(Value::as_u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_valid_pre_london_clique() {
        for t in TEMPLATES {
            let value: Value = serde_json::from_str(t.text).unwrap();
            validate(&value).unwrap();
            assert!(
                value["config"].get("londonBlock").is_none(),
                "{} has London",
                t.name
            );
        }
        let ids: Vec<_> = TEMPLATES
            .iter()
            .map(|t| chain_id(&serde_json::from_str(t.text).unwrap()).unwrap())
            .collect();
        assert_eq!(ids, [1337, 1338]);
    }

    #[test]
    fn extra_data_layout() {
        let a = Address::repeat_byte(0x22);
        let b = Address::repeat_byte(0x11);
        let extra = clique_extra_data(&[a, b]);
        let bytes = hex::decode(&extra[2..]).unwrap();
        assert_eq!(bytes.len(), 32 + 2 * 20 + 65);
        assert_eq!(&bytes[32..52], b.as_slice(), "signers are sorted");
        assert_eq!(&bytes[52..72], a.as_slice());
        assert!(bytes[..32].iter().chain(&bytes[72..]).all(|b| *b == 0));
    }

    #[test]
    fn rejects_post_london_and_non_clique() {
        let mut g: Value = serde_json::from_str(TEMPLATES[0].text).unwrap();
        g["config"]["shanghaiTime"] = json!(0);
        assert!(validate(&g)
            .unwrap_err()
            .to_string()
            .contains("shanghaiTime"));
        let mut g: Value = serde_json::from_str(TEMPLATES[0].text).unwrap();
        g["config"]["londonBlock"] = json!(0);
        assert!(validate(&g)
            .unwrap_err()
            .to_string()
            .contains("londonBlock"));
        let mut g: Value = serde_json::from_str(TEMPLATES[0].text).unwrap();
        g["config"].as_object_mut().unwrap().remove("clique");
        assert!(validate(&g).is_err());
        assert!(validate(&json!([])).is_err());
    }

    #[test]
    fn build_fills_period_signers_and_alloc() {
        let g: Value = serde_json::from_str(TEMPLATES[1].text).unwrap();
        let signer = Address::repeat_byte(1);
        let built = build(&g, 2, &[signer], &[(signer, U256::from(10u64))]).unwrap();
        assert_eq!(period(&built), Some(2));
        assert_eq!(built["alloc"][format!("{signer:#x}")]["balance"], "0xa");
        assert!(build(&g, 2, &[], &[]).is_err());
    }
}

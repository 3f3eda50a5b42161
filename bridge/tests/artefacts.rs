//! The checked-in contract artefacts are what the pinned compiler builds from
//! the checked-in sources.

use anyhow::{ensure, Result};

#[test]
fn checked_in_artefacts_equal_a_fresh_build() -> Result<()> {
    let root = testnet::workspace_root();
    let out = tempfile::tempdir()?;
    let printed = testnet::run_command(
        std::process::Command::new(root.join("scripts/build-contracts")).arg(out.path()),
    )?;
    for name in ["BridgedToken.json", "BridgedNft.json", "DepositForger.json"] {
        let fresh = std::fs::read_to_string(out.path().join(name))?;
        let checked_in = std::fs::read_to_string(root.join("contracts/artifacts").join(name))?;
        ensure!(
            fresh == checked_in,
            "contracts/artifacts/{name} differs from a fresh build: run scripts/build-contracts ({printed})"
        );
        let artefact: serde_json::Value = serde_json::from_str(&fresh)?;
        assert_eq!(artefact["evmVersion"], "berlin");
        assert!(artefact["compiler"]
            .as_str()
            .unwrap_or_default()
            .starts_with("solc 0.8.26+"));
    }
    Ok(())
}

//! The bridge contracts as the Rust code sees them: the one EIP-712 struct the
//! validators sign, the deposit event, and the calls the client makes. The
//! ABI+bytecode artefacts come from `scripts/build-contracts`.

use alloy::primitives::{keccak256, Address, B256, U256};
use alloy::sol;
use alloy::sol_types::{Eip712Domain, SolStruct, SolValue};

sol! {
    /// The only struct the service ever signs (see BridgeCore.sol).
    #[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    struct Claim {
        uint256 sourceChainId;
        address sourceContract;
        uint256 depositNonce;
        address recipient;
        uint256 value;
    }

    /// Both bridge contracts share these functions, events and errors
    /// (ERC-20 `approve(address,uint256)` and ERC-721's share a selector).
    #[sol(rpc)]
    interface IBridge {
        event Deposit(uint256 indexed nonce, address indexed from, address indexed recipient, uint256 value, uint256 destinationChainId);
        event Claimed(bytes32 indexed depositId, address indexed recipient, uint256 value);

        error ZeroAddress();
        error ZeroValue();
        error BadValidatorSet();
        error WrongPeer();
        error AlreadyClaimed(bytes32 depositId);
        error NotEnoughSignatures(uint256 valid, uint256 threshold);
        error SignersNotSorted();
        error UnknownSigner(address signer);
        error CapExceeded(uint256 requested, uint256 left);
        error PeerNotSet();
        error EnforcedPause();
        error ECDSAInvalidSignature();
        error ECDSAInvalidSignatureLength(uint256 length);
        error ECDSAInvalidSignatureS(bytes32 s);
        error OwnableUnauthorizedAccount(address account);

        function deposit(address recipient, uint256 value) external returns (uint256);
        function claim(Claim c, bytes[] signatures) external;
        function claimed(bytes32 id) external view returns (bool);
        function claimDigest(Claim c) external view returns (bytes32);
        function depositId(uint256 sourceChainId, address sourceContract, uint256 nonce) external pure returns (bytes32);
        function depositNonce() external view returns (uint256);
        function setPeer(uint256 chainId, address peer) external;
        function setValidators(address[] validators, uint256 threshold) external;
        function validators() external view returns (address[] memory);
        function threshold() external view returns (uint256);
        function pause() external;
        function unpause() external;
        function mint(address to, uint256 value) external;
        function approve(address spender, uint256 value) external;
        function balanceOf(address owner) external view returns (uint256);
        function ownerOf(uint256 tokenId) external view returns (address);
        function home() external view returns (bool);
        function setCap(uint256 cap, uint256 period) external;
        function totalSupply() external view returns (uint256);
    }
}

/// ERC-20 `Transfer`: the value is in the data.
pub mod erc20 {
    alloy::sol! {
        event Transfer(address indexed from, address indexed to, uint256 value);
    }
}

/// ERC-721 `Transfer`: the token id is the third topic.
pub mod erc721 {
    alloy::sol! {
        event Transfer(address indexed from, address indexed to, uint256 indexed tokenId);
    }
}

/// Which asset a bridge contract carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssetKind {
    Erc20,
    Erc721,
}

impl AssetKind {
    fn artefact(self) -> &'static str {
        match self {
            Self::Erc20 => include_str!("../../contracts/artifacts/BridgedToken.json"),
            Self::Erc721 => include_str!("../../contracts/artifacts/BridgedNft.json"),
        }
    }

    /// Creation code from the checked-in artefact.
    pub fn bytecode(self) -> Result<Vec<u8>, ArtefactError> {
        let artefact: serde_json::Value = serde_json::from_str(self.artefact())?;
        let code = artefact["bytecode"]
            .as_str()
            .ok_or(ArtefactError::NoBytecode)?;
        Ok(hex::decode(code.trim_start_matches("0x"))?)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArtefactError {
    #[error("artefact is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("artefact has no bytecode")]
    NoBytecode,
    #[error("artefact bytecode is not hex: {0}")]
    Hex(#[from] hex::FromHexError),
}

/// Constructor arguments of both bridge contracts.
#[derive(Debug, Clone)]
pub struct DeployArgs {
    pub name: String,
    pub symbol: String,
    /// The chain where the admin may mint; deposits lock here and burn elsewhere.
    pub home: bool,
    pub admin: Address,
    pub validators: Vec<Address>,
    pub threshold: u64,
    /// Units (amount or tokens) claims may pay out per period.
    pub cap: U256,
    pub period_secs: u64,
}

impl DeployArgs {
    /// Creation code followed by the ABI-encoded constructor arguments.
    pub fn deploy_code(&self, kind: AssetKind) -> Result<Vec<u8>, ArtefactError> {
        let mut validators = self.validators.clone();
        validators.sort();
        let mut code = kind.bytecode()?;
        code.extend(
            (
                self.name.clone(),
                self.symbol.clone(),
                self.home,
                self.admin,
                validators,
                U256::from(self.threshold),
                self.cap,
                U256::from(self.period_secs),
            )
                .abi_encode_params(),
        );
        Ok(code)
    }
}

/// The EIP-712 domain of a bridge contract: bound to its chain and address.
pub fn domain(chain_id: u64, contract: Address) -> Eip712Domain {
    alloy::sol_types::eip712_domain! {
        name: "GethBridge",
        version: "1",
        chain_id: chain_id,
        verifying_contract: contract,
    }
}

impl Claim {
    /// The digest validators sign, as `claimDigest` computes it on chain.
    pub fn digest(&self, destination_chain_id: u64, destination: Address) -> B256 {
        self.eip712_signing_hash(&domain(destination_chain_id, destination))
    }

    /// The key the destination records the claim under (`depositId`).
    pub fn deposit_id(&self) -> B256 {
        keccak256((self.sourceChainId, self.sourceContract, self.depositNonce).abi_encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_type_string_matches_the_solidity_typehash() {
        let source = include_str!("../../contracts/src/BridgeCore.sol");
        let encoded = Claim::eip712_encode_type();
        assert!(
            source.contains(&format!("\"{encoded}\"")),
            "{encoded} not in BridgeCore.sol"
        );
    }

    #[test]
    fn both_artefacts_carry_bytecode() {
        for kind in [AssetKind::Erc20, AssetKind::Erc721] {
            let code = kind.bytecode().expect("artefact");
            assert!(
                code.len() > 1000,
                "{kind:?} bytecode is {} bytes",
                code.len()
            );
        }
    }

    #[test]
    fn digest_depends_on_the_destination_chain_and_contract() {
        let claim = Claim {
            sourceChainId: U256::from(1u64),
            sourceContract: Address::repeat_byte(1),
            depositNonce: U256::from(1u64),
            recipient: Address::repeat_byte(2),
            value: U256::from(5u64),
        };
        let a = claim.digest(10, Address::repeat_byte(3));
        assert_ne!(a, claim.digest(11, Address::repeat_byte(3)));
        assert_ne!(a, claim.digest(10, Address::repeat_byte(4)));
        assert_eq!(a, claim.digest(10, Address::repeat_byte(3)));
    }
}

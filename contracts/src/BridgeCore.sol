// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.26;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

/// Bridge logic shared by the ERC-20 and the ERC-721 asset: deposits with a
/// contract-assigned nonce, claims verified against a t-of-n validator set with
/// EIP-712 (domain: this contract on `block.chainid`), single-use claims keyed
/// by deposit id, pause switch and a per-period cap on what claims pay out.
abstract contract BridgeCore is Ownable, Pausable, EIP712 {
    /// The one struct the validators sign. `value` is the amount (ERC-20) or
    /// the token id (ERC-721).
    struct Claim {
        uint256 sourceChainId;
        address sourceContract;
        uint256 depositNonce;
        address recipient;
        uint256 value;
    }

    bytes32 public constant CLAIM_TYPEHASH = keccak256(
        "Claim(uint256 sourceChainId,address sourceContract,uint256 depositNonce,address recipient,uint256 value)"
    );

    /// Emitted only after the asset moved into this contract.
    event Deposit(
        uint256 indexed nonce,
        address indexed from,
        address indexed recipient,
        uint256 value,
        uint256 destinationChainId
    );
    event Claimed(bytes32 indexed depositId, address indexed recipient, uint256 value);
    event ValidatorsChanged(address[] validators, uint256 threshold);
    event PeerChanged(uint256 chainId, address peer);
    event CapChanged(uint256 cap, uint256 period);

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

    /// The source chain and contract whose deposits this contract pays out.
    uint256 public peerChainId;
    address public peerContract;

    address[] private _validators;
    mapping(address => bool) public isValidator;
    uint256 public threshold;

    uint256 public depositNonce;
    mapping(bytes32 => bool) public claimed;

    /// Claims may pay out at most `cap` units per `period` seconds.
    uint256 public cap;
    uint256 public period;
    uint256 public periodStart;
    uint256 public spentInPeriod;

    constructor(
        address admin,
        address[] memory validators_,
        uint256 threshold_,
        uint256 cap_,
        uint256 period_
    ) Ownable(admin) EIP712("GethBridge", "1") {
        _setValidators(validators_, threshold_);
        _setCap(cap_, period_);
    }

    // ---- admin ----

    function setPeer(uint256 chainId, address peer) external onlyOwner {
        if (peer == address(0) || chainId == 0) revert ZeroAddress();
        peerChainId = chainId;
        peerContract = peer;
        emit PeerChanged(chainId, peer);
    }

    function setValidators(address[] calldata validators_, uint256 threshold_) external onlyOwner {
        _setValidators(validators_, threshold_);
    }

    function setCap(uint256 cap_, uint256 period_) external onlyOwner {
        _setCap(cap_, period_);
    }

    function pause() external onlyOwner {
        _pause();
    }

    function unpause() external onlyOwner {
        _unpause();
    }

    function validators() external view returns (address[] memory) {
        return _validators;
    }

    // ---- claims ----

    /// The id under which a claim is recorded as used: one per source deposit.
    function depositId(uint256 sourceChainId, address sourceContract, uint256 nonce)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(sourceChainId, sourceContract, nonce));
    }

    /// The EIP-712 digest the validators sign for `c`.
    function claimDigest(Claim calldata c) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    CLAIM_TYPEHASH, c.sourceChainId, c.sourceContract, c.depositNonce, c.recipient, c.value
                )
            )
        );
    }

    /// Checks the claim and marks it used; the caller then pays `c.recipient`.
    /// Signatures must come from distinct validators in ascending address order.
    function _useClaim(Claim calldata c, bytes[] calldata signatures, uint256 units)
        internal
        whenNotPaused
        returns (bytes32 id)
    {
        if (peerContract == address(0)) revert PeerNotSet();
        if (c.sourceChainId != peerChainId || c.sourceContract != peerContract) revert WrongPeer();
        if (c.recipient == address(0)) revert ZeroAddress();
        if (c.value == 0 && units != 1) revert ZeroValue();
        id = depositId(c.sourceChainId, c.sourceContract, c.depositNonce);
        if (claimed[id]) revert AlreadyClaimed(id);
        bytes32 digest = claimDigest(c);
        address last = address(0);
        uint256 valid = 0;
        for (uint256 i = 0; i < signatures.length; i++) {
            address signer = ECDSA.recover(digest, signatures[i]);
            if (signer <= last) revert SignersNotSorted();
            if (!isValidator[signer]) revert UnknownSigner(signer);
            last = signer;
            valid++;
        }
        if (valid < threshold) revert NotEnoughSignatures(valid, threshold);
        _spendCap(units);
        claimed[id] = true;
        emit Claimed(id, c.recipient, c.value);
    }

    function _nextDeposit(address from, address recipient, uint256 value) internal returns (uint256 nonce) {
        if (recipient == address(0)) revert ZeroAddress();
        if (peerContract == address(0)) revert PeerNotSet();
        nonce = ++depositNonce;
        emit Deposit(nonce, from, recipient, value, peerChainId);
    }

    // ---- internals ----

    function _setValidators(address[] memory validators_, uint256 threshold_) private {
        uint256 n = validators_.length;
        if (threshold_ == 0 || threshold_ > n) revert BadValidatorSet();
        for (uint256 i = 0; i < _validators.length; i++) {
            isValidator[_validators[i]] = false;
        }
        address last = address(0);
        for (uint256 i = 0; i < n; i++) {
            // Ascending order rules out duplicates and, starting above zero, the zero signer.
            if (validators_[i] <= last) revert BadValidatorSet();
            last = validators_[i];
            isValidator[last] = true;
        }
        _validators = validators_;
        threshold = threshold_;
        emit ValidatorsChanged(validators_, threshold_);
    }

    function _setCap(uint256 cap_, uint256 period_) private {
        if (period_ == 0) revert BadValidatorSet();
        cap = cap_;
        period = period_;
        emit CapChanged(cap_, period_);
    }

    function _spendCap(uint256 units) private {
        if (block.timestamp >= periodStart + period) {
            periodStart = block.timestamp;
            spentInPeriod = 0;
        }
        // The admin may lower the cap below what was already spent this period.
        uint256 left = cap > spentInPeriod ? cap - spentInPeriod : 0;
        if (units > left) revert CapExceeded(units, left);
        spentInPeriod += units;
    }
}

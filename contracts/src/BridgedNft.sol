// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.26;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {BridgeCore} from "./BridgeCore.sol";

/// An ERC-721 asset with its bridge. On the home chain (`home`, where the
/// admin may mint) deposits lock the token in this contract and claims
/// release it; on the other chain deposits burn and claims mint.
contract BridgedNft is ERC721, BridgeCore {
    bool public immutable home;

    error NotHome();

    constructor(
        string memory name_,
        string memory symbol_,
        bool home_,
        address admin,
        address[] memory validators_,
        uint256 threshold_,
        uint256 cap_,
        uint256 period_
    ) ERC721(name_, symbol_) BridgeCore(admin, validators_, threshold_, cap_, period_) {
        home = home_;
    }

    function mint(address to, uint256 tokenId) external onlyOwner {
        if (!home) revert NotHome();
        _mint(to, tokenId);
    }

    /// Moves `tokenId` from the caller (owner or approved) into the bridge,
    /// then logs the deposit for `recipient` on the peer chain.
    function deposit(address recipient, uint256 tokenId) external whenNotPaused returns (uint256) {
        address owner = ownerOf(tokenId);
        // transferFrom checks that the caller owns the token or is approved for it.
        transferFrom(owner, address(this), tokenId);
        if (!home) _burn(tokenId);
        return _nextDeposit(owner, recipient, tokenId);
    }

    /// Pays `c.recipient` (not the sender: anyone may submit a claim).
    /// Counts one unit against the cap per token.
    function claim(Claim calldata c, bytes[] calldata signatures) external {
        _useClaim(c, signatures, 1);
        if (home) {
            _transfer(address(this), c.recipient, c.value);
        } else {
            _mint(c.recipient, c.value);
        }
    }
}

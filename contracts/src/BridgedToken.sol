// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.26;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {BridgeCore} from "./BridgeCore.sol";

/// An ERC-20 asset with its bridge. On the home chain (`home`, where the
/// admin may mint) deposits lock tokens in this contract and claims release
/// them; on the other chain deposits burn and claims mint.
contract BridgedToken is ERC20, BridgeCore {
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
    ) ERC20(name_, symbol_) BridgeCore(admin, validators_, threshold_, cap_, period_) {
        home = home_;
    }

    function mint(address to, uint256 amount) external onlyOwner {
        if (!home) revert NotHome();
        _mint(to, amount);
    }

    /// Moves `amount` from the caller into the bridge, then logs the deposit
    /// for `recipient` on the peer chain.
    function deposit(address recipient, uint256 amount) external whenNotPaused returns (uint256) {
        if (amount == 0) revert ZeroValue();
        _transfer(msg.sender, address(this), amount);
        if (!home) _burn(address(this), amount);
        return _nextDeposit(msg.sender, recipient, amount);
    }

    /// Pays `c.recipient` (not the sender: anyone may submit a claim).
    function claim(Claim calldata c, bytes[] calldata signatures) external {
        _useClaim(c, signatures, c.value);
        if (home) {
            _transfer(address(this), c.recipient, c.value);
        } else {
            _mint(c.recipient, c.value);
        }
    }
}

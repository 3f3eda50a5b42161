// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import "./lib/Owned.sol";

/// Stores one number; anyone may change it, and every change is an event.
contract Storage is Owned {
    uint256 private value;

    event ValueChanged(address indexed by, uint256 previous, uint256 value);

    constructor(uint256 initial) {
        value = initial;
    }

    function set(uint256 newValue) external {
        emit ValueChanged(msg.sender, value, newValue);
        value = newValue;
    }

    function get() external view returns (uint256) {
        return value;
    }
}

// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// Remembers who deployed the contract (imported by Storage.sol).
contract Owned {
    address public owner;

    constructor() {
        owner = msg.sender;
    }

    modifier onlyOwner() {
        require(msg.sender == owner, "not the owner");
        _;
    }
}

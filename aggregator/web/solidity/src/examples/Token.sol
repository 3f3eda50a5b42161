// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import "@openzeppelin/contracts/access/Ownable.sol";

/// An ERC-20 token from OpenZeppelin: the deployer gets the initial supply
/// and may mint more.
contract Token is ERC20, Ownable {
    constructor(uint256 initialSupply) ERC20("Example Token", "EXT") Ownable(msg.sender) {
        _mint(msg.sender, initialSupply);
    }

    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }
}

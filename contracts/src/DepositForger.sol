// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.26;

interface IBridgeDeposit {
    function deposit(address recipient, uint256 value) external returns (uint256);
}

/// Test-only attacker: emits an event with the bridge's Deposit topic from
/// its own address (the signing service must ignore it), optionally next to a
/// real deposit in the same transaction. Never deployed in production.
contract DepositForger {
    event Deposit(
        uint256 indexed nonce,
        address indexed from,
        address indexed recipient,
        uint256 value,
        uint256 destinationChainId
    );

    function forge(address bridge, address recipient, uint256 fakeValue, uint256 realValue, uint256 destinationChainId)
        external
    {
        emit Deposit(1, msg.sender, recipient, fakeValue, destinationChainId);
        if (realValue > 0) {
            IBridgeDeposit(bridge).deposit(recipient, realValue);
        }
    }
}

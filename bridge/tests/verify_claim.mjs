// Independent check of a bridge claim signature with ethers.js: prints the
// recovered signer and the EIP-712 digest. Usage: node verify_claim.mjs '<signed claim JSON>'
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(path.join(process.env.ETHERS_DIR, "package.json"));
const { ethers } = require("ethers");

const signed = JSON.parse(process.argv[2]);
const domain = {
    name: "GethBridge",
    version: "1",
    chainId: signed.destination_chain_id,
    verifyingContract: signed.destination_contract,
};
const types = {
    Claim: [
        { name: "sourceChainId", type: "uint256" },
        { name: "sourceContract", type: "address" },
        { name: "depositNonce", type: "uint256" },
        { name: "recipient", type: "address" },
        { name: "value", type: "uint256" },
    ],
};
const c = signed.claim;
const value = {
    sourceChainId: BigInt(c.sourceChainId),
    sourceContract: c.sourceContract,
    depositNonce: BigInt(c.depositNonce),
    recipient: c.recipient,
    value: BigInt(c.value),
};
console.log(ethers.verifyTypedData(domain, types, value, signed.signature));
console.log(ethers.TypedDataEncoder.hash(domain, types, value));

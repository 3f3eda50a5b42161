// A wallet's path through the HTTPS JSON-RPC gateway, as MetaMask takes it:
// ethers.js asks the gateway for the fee data, signs a transfer locally and
// sends it with eth_sendRawTransaction, then waits for it to be mined.
//
//   NODE_EXTRA_CA_CERTS=ca.pem WALLET_KEY=0x… node wallet.mjs https://localhost:PORT 0xRECIPIENT
//
// The gateway's certificate is verified against the CA in NODE_EXTRA_CA_CERTS
// (no "insecure" switch). Prints one JSON line; exit 0 when the transfer was
// mined and the sender paid exactly the value, 1 otherwise, 2 on errors.
import { ethers } from "ethers";

const [url, to] = process.argv.slice(2);
const key = process.env.WALLET_KEY;
if (!url || !to || !key) {
  console.error("usage: WALLET_KEY=0x… node wallet.mjs https://gateway 0xRECIPIENT");
  process.exit(2);
}

try {
  const provider = new ethers.JsonRpcProvider(url, undefined, { pollingInterval: 500 });
  const network = await provider.getNetwork();
  const fee = await provider.getFeeData();
  const wallet = new ethers.Wallet(key, provider);
  const value = 12345n;
  const before = await provider.getBalance(wallet.address);
  // No fee fields: ethers fills them from the gateway's advice, as a wallet does.
  const tx = await wallet.sendTransaction({ to, value });
  const receipt = await tx.wait(1, 180_000);
  const after = await provider.getBalance(wallet.address, receipt.blockNumber);
  const paid = before - after;
  const out = {
    chainId: network.chainId.toString(),
    advisedGasPrice: fee.gasPrice?.toString() ?? null,
    maxFeePerGas: fee.maxFeePerGas?.toString() ?? null,
    type: tx.type,
    txGasPrice: tx.gasPrice?.toString() ?? null,
    status: receipt.status,
    block: receipt.blockNumber,
    value: value.toString(),
    paid: paid.toString(),
  };
  console.log(JSON.stringify(out));
  process.exit(receipt.status === 1 && paid === value ? 0 : 1);
} catch (e) {
  console.error(`wallet: ${e?.stack ?? e}`);
  process.exit(2);
}

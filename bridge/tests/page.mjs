// Drives the bridge page in headless Chromium with FakeTestWallet, a test
// EIP-1193 provider standing in for MetaMask's UI (the one fake of the test:
// it approves every request; the chains, the signing service and the page are
// real). It signs with a key (ethers.js) and forwards reads to the chain it is
// switched to, as MetaMask does. Completes one transfer, then deposits a
// second one, reloads the page (the transfer is left in between) and resumes it.
//
//   WALLET_KEY=0x… ETHERS_DIR=tests/browser node page.mjs <page-url> <chainId>=<rpc> <chainId>=<rpc> <value1> <value2>
//
// Prints one JSON line with the transfers' states; exit 0 when both are claimed.
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(path.join(process.env.ETHERS_DIR, "package.json"));
const { ethers } = require("ethers");
const { chromium } = require("playwright-core");

const [url, chainA, chainB, value1, value2] = process.argv.slice(2);
const rpcs = new Map(
  [chainA, chainB].map((s) => {
    const [id, rpc] = s.split("=");
    return [BigInt(id), new ethers.JsonRpcProvider(rpc, undefined, { staticNetwork: true, pollingInterval: 300 })];
  }),
);
let current = [...rpcs.keys()][0];
const key = new ethers.Wallet(process.env.WALLET_KEY);
const requests = [];

// FakeTestWallet's node side: what a user would approve in MetaMask.
async function fakeWalletRpc(method, params) {
  requests.push(method);
  const provider = rpcs.get(current);
  switch (method) {
    case "eth_requestAccounts":
    case "eth_accounts":
      return [key.address];
    case "eth_chainId":
      return "0x" + current.toString(16);
    case "wallet_switchEthereumChain": {
      const id = BigInt(params[0].chainId);
      if (!rpcs.has(id)) throw new Error(`unknown chain ${id}`);
      current = id;
      return null;
    }
    case "eth_sendTransaction": {
      const signer = key.connect(provider);
      const tx = params[0];
      // Legacy transactions: the sidechain has no base fee.
      const sent = await signer.sendTransaction({
        to: tx.to,
        data: tx.data,
        type: 0,
        gasPrice: (await provider.getFeeData()).gasPrice,
      });
      return sent.hash;
    }
    default:
      return provider.send(method, params);
  }
}

const ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"];
const watchdog = setTimeout(() => {
  process.stderr.write("page: gave up after 420 s\n");
  process.exit(2);
}, 420_000);
watchdog.unref();

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_BIN || "/usr/bin/chromium",
  headless: true,
  args: ARGS,
});
let code = 2;
try {
  const context = await browser.newContext();
  await context.exposeFunction("__fakeTestWalletRpc", async (method, params) => {
    try {
      return { ok: await fakeWalletRpc(method, params) };
    } catch (e) {
      return { error: e.shortMessage || e.message || String(e) };
    }
  });
  await context.addInitScript(() => {
    window.ethereum = {
      isFakeTestWallet: true,
      async request({ method, params }) {
        const r = await window.__fakeTestWalletRpc(method, params ?? []);
        if (r.error) throw new Error(r.error);
        return r.ok;
      },
      on() {},
      removeListener() {},
    };
  });
  const page = await context.newPage();
  page.on("pageerror", (err) => process.stderr.write(`page error: ${err.message}\n`));
  await page.goto(url);
  await page.click("#connect");
  await page.waitForSelector(".asset-row", { timeout: 60_000 });

  // One full transfer: deposit, signature, claim.
  await page.fill("#value", value1);
  await page.click("#transfer");
  await page.waitForSelector('.transfer-row[data-state="claimed"]', { timeout: 180_000 });

  // A second deposit left in between: the tab is reloaded, then resumed.
  await page.fill("#value", value2);
  await page.click("#deposit-only");
  await page.waitForSelector('.transfer-row[data-state="in between"]', { timeout: 120_000 });
  await page.reload();
  await page.click("#connect");
  await page.waitForSelector('.transfer-row[data-state="in between"] .resume', { timeout: 60_000 });
  await page.click('.transfer-row[data-state="in between"] .resume');
  await page.waitForFunction(
    () =>
      document.body.dataset.busy === "0" &&
      [...document.querySelectorAll(".transfer-row")].every((r) => r.dataset.state === "claimed"),
    null,
    { timeout: 180_000 },
  );
  const transfers = await page.$$eval(".transfer-row", (rows) => rows.map((r) => ({ tx: r.dataset.tx, state: r.dataset.state })));
  const assets = await page.$$eval(".asset-row", (rows) =>
    rows.map((r) => ({ chain: r.dataset.chain, contract: r.dataset.contract, balance: r.dataset.balance })),
  );
  console.log(JSON.stringify({ transfers, assets, wallet: "FakeTestWallet", requests: [...new Set(requests)] }));
  code = transfers.length === 2 && transfers.every((t) => t.state === "claimed") ? 0 : 1;
} catch (e) {
  process.stderr.write(`page: ${String(e.stack || e).replace(/\u001b\[[0-9;]*m/g, "")}\n`);
  const status = await browser.contexts()[0]?.pages()[0]?.textContent("#status").catch(() => "");
  process.stderr.write(`page status line: ${status}\n`);
} finally {
  await browser.close();
}
process.exit(code);

// Bridge page: an injected EIP-1193 wallet (window.ethereum) signs and sends;
// the signing service (this page's origin) answers with the signed claim and
// its calldata. Transfers not yet claimed are kept in localStorage so they
// can be resumed after the tab was closed.
"use strict";

const DEPOSIT = "0x47e7ef24"; // deposit(address,uint256)
const BALANCE_OF = "0x70a08231"; // balanceOf(address)
const STORE = "bridge.transfers";

let account = null;
let directions = [];
const $ = (id) => document.getElementById(id);

function status(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

const word = (hex) => hex.replace(/^0x/, "").toLowerCase().padStart(64, "0");
const hexOf = (n) => "0x" + BigInt(n).toString(16);
const wallet = (method, params = []) => window.ethereum.request({ method, params });

async function useChain(chainId) {
  const current = BigInt(await wallet("eth_chainId"));
  if (current !== BigInt(chainId)) {
    await wallet("wallet_switchEthereumChain", [{ chainId: hexOf(chainId) }]);
  }
}

async function waitReceipt(hash) {
  for (let i = 0; i < 600; i++) {
    const receipt = await wallet("eth_getTransactionReceipt", [hash]);
    if (receipt) {
      if (receipt.status !== "0x1") throw new Error(`transaction ${hash} reverted`);
      return receipt;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`transaction ${hash} not mined`);
}

function transfers() {
  return JSON.parse(localStorage.getItem(STORE) || "[]");
}

function saveTransfers(list) {
  localStorage.setItem(STORE, JSON.stringify(list));
  renderTransfers();
}

function renderTransfers() {
  const body = $("transfers").tBodies[0];
  body.replaceChildren();
  for (const t of transfers()) {
    const row = body.insertRow();
    row.className = "transfer-row";
    row.dataset.tx = t.tx;
    row.dataset.state = t.state;
    row.insertCell().textContent = t.direction;
    row.insertCell().textContent = t.tx;
    row.insertCell().textContent = t.state;
    const cell = row.insertCell();
    if (t.state !== "claimed") {
      const button = document.createElement("button");
      button.className = "resume";
      button.textContent = "Resume";
      button.onclick = () => run(() => claim(t.tx));
      cell.append(button);
    }
  }
}

function setState(tx, state) {
  saveTransfers(transfers().map((t) => (t.tx === tx ? { ...t, state } : t)));
}

async function refresh() {
  const body = $("assets").tBodies[0];
  body.replaceChildren();
  const seen = new Set();
  for (const d of directions) {
    for (const p of d.pairs) {
      for (const [chain, contract] of [[d.source_chain_id, p.source], [d.destination_chain_id, p.destination]]) {
        const key = `${chain}:${contract}`.toLowerCase();
        if (seen.has(key)) continue;
        seen.add(key);
        await useChain(chain);
        const data = BALANCE_OF + word(account);
        const balance = BigInt(await wallet("eth_call", [{ to: contract, data }, "latest"]));
        const row = body.insertRow();
        row.className = "asset-row";
        row.dataset.chain = String(chain);
        row.dataset.contract = contract.toLowerCase();
        row.dataset.balance = balance.toString();
        for (const text of [p.kind, String(chain), contract, balance.toString()]) {
          row.insertCell().textContent = text;
        }
      }
    }
  }
}

async function deposit() {
  const [di, pi] = $("pair").value.split(":").map(Number);
  const d = directions[di];
  const p = d.pairs[pi];
  const recipient = $("recipient").value.trim() || account;
  const value = BigInt($("value").value.trim());
  await useChain(d.source_chain_id);
  status(`depositing on chain ${d.source_chain_id}: confirm in your wallet`);
  const tx = await wallet("eth_sendTransaction", [
    { from: account, to: p.source, data: DEPOSIT + word(recipient) + word(value.toString(16)) },
  ]);
  saveTransfers([...transfers(), { direction: d.name, tx, state: "deposited" }]);
  await waitReceipt(tx);
  setState(tx, "in between");
  return tx;
}

async function claim(tx) {
  const t = transfers().find((x) => x.tx === tx);
  let answer;
  for (;;) {
    const response = await fetch(`v1/${t.direction}/sign`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ tx_hash: tx }),
    });
    answer = await response.json();
    if (answer.status === "signed") break;
    if (answer.status !== "pending") throw new Error(answer.reason);
    status(`${tx}: ${answer.reason}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
  await useChain(answer.destination_chain_id);
  status(`claiming on chain ${answer.destination_chain_id}: confirm in your wallet`);
  const hash = await wallet("eth_sendTransaction", [
    { from: account, to: answer.destination_contract, data: answer.claim_calldata },
  ]);
  await waitReceipt(hash);
  setState(tx, "claimed");
  await refresh();
  status(`claimed: ${hash}`);
}

// data-busy on <body> tells scripts (and tests) when every action has
// finished: actions can overlap (a resume clicked while connect still loads).
let running = 0;
async function run(action) {
  running += 1;
  document.body.dataset.busy = "1";
  try {
    await action();
  } catch (e) {
    status(e.message || String(e), true);
  } finally {
    running -= 1;
    document.body.dataset.busy = running > 0 ? "1" : "0";
  }
}

async function connect() {
  if (!window.ethereum) {
    status("no wallet found: install MetaMask or another EIP-1193 wallet", true);
    return;
  }
  [account] = await wallet("eth_requestAccounts");
  $("account").textContent = account;
  directions = await (await fetch("v1/directions")).json();
  const select = $("pair");
  select.replaceChildren();
  directions.forEach((d, di) =>
    d.pairs.forEach((p, pi) => {
      const option = document.createElement("option");
      option.value = `${di}:${pi}`;
      option.textContent = `${p.kind} ${d.name} (${p.source})`;
      select.append(option);
    }),
  );
  for (const id of ["refresh", "transfer", "deposit-only"]) $(id).disabled = false;
  renderTransfers();
  await refresh();
  status("connected");
}

$("connect").onclick = () => run(connect);
$("refresh").onclick = () => run(refresh);
$("transfer").onclick = () => run(async () => claim(await deposit()));
$("deposit-only").onclick = () => run(async () => {
  const tx = await deposit();
  status(`deposited ${tx}: resume it below to claim`);
});
renderTransfers();

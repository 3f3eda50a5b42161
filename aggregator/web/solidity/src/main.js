// The /solidity page: files in a CodeMirror editor, compiled by solc in a
// worker, deployed and called through an injected wallet or, when the
// operator enables them, the chain's development accounts (signed here, sent
// raw through the aggregator's restricted RPC pass-through). Everything it
// loads comes from the aggregator.

import { EditorView, basicSetup } from "codemirror";
import { EditorState } from "@codemirror/state";
import { setDiagnostics } from "@codemirror/lint";
import { solidity } from "@replit/codemirror-lang-solidity";
import {
  BrowserProvider,
  Contract,
  ContractFactory,
  Interface,
  JsonRpcProvider,
  ParamType,
  Wallet,
  formatEther,
} from "ethers";

import storageExample from "./examples/Storage.sol";
import ownedExample from "./examples/lib/Owned.sol";
import tokenExample from "./examples/Token.sol";

const EXAMPLES = {
  "Storage.sol": storageExample,
  "lib/Owned.sol": ownedExample,
  "Token.sol": tokenExample,
};
const FILES_KEY = "solidity.files";
const DEPLOYED_KEY = "solidity.deployed";

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k in e && typeof v !== "string") e[k] = v;
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) e.append(c instanceof Node ? c : String(c));
  return e;
};

function load(key, fallback) {
  try {
    const v = JSON.parse(localStorage.getItem(key));
    return v ?? fallback;
  } catch {
    return fallback;
  }
}

const state = {
  config: null,
  files: load(FILES_KEY, { ...EXAMPLES }),
  current: null,
  compiled: null, // { contracts: [{file, name, abi, bytecode}], input }
  deployed: load(DEPLOYED_KEY, []),
  signer: null,
};
const saveFiles = () => localStorage.setItem(FILES_KEY, JSON.stringify(state.files));
const saveDeployed = () => localStorage.setItem(DEPLOYED_KEY, JSON.stringify(state.deployed));

// ---- editor and files ----

const docs = new Map();
const view = new EditorView({ parent: $("#editor") });

function editorState(path) {
  return EditorState.create({
    doc: state.files[path],
    extensions: [
      basicSetup,
      solidity,
      EditorView.updateListener.of((u) => {
        if (u.docChanged && state.current) {
          state.files[state.current] = u.state.doc.toString();
          saveFiles();
        }
      }),
    ],
  });
}

function open(path, line, column) {
  if (!(path in state.files)) return false;
  if (state.current) docs.set(state.current, view.state);
  state.current = path;
  if (!docs.has(path)) docs.set(path, editorState(path));
  view.setState(docs.get(path));
  renderTabs();
  showDiagnostics();
  if (line) {
    const l = view.state.doc.line(Math.min(line, view.state.doc.lines));
    const pos = Math.min(l.from + Math.max((column || 1) - 1, 0), l.to);
    view.dispatch({ selection: { anchor: pos }, scrollIntoView: true });
    view.focus();
  }
  return true;
}

function renderTabs() {
  const tabs = $("#tabs");
  tabs.replaceChildren(
    ...Object.keys(state.files)
      .sort()
      .map((path) =>
        el(
          "span",
          { class: "tab" + (path === state.current ? " active" : ""), "data-file": path },
          el("button", { class: "tab-open", onclick: () => open(path) }, path),
          el("button", { class: "tab-close", title: "Delete " + path, onclick: () => removeFile(path) }, "×"),
        ),
      ),
  );
}

function addFile() {
  const path = (prompt("New file (e.g. contracts/My.sol):", "New.sol") || "").trim();
  if (!path) return;
  if (!/^[A-Za-z0-9_.\-/]+\.sol$/.test(path) || path.includes("..")) {
    alert("Use letters, digits, _ - . and / only, ending in .sol");
    return;
  }
  if (!(path in state.files)) {
    state.files[path] = "// SPDX-License-Identifier: MIT\npragma solidity ^0.8.20;\n\n";
    saveFiles();
  }
  open(path);
}

function removeFile(path) {
  if (!confirm("Delete " + path + "?")) return;
  delete state.files[path];
  docs.delete(path);
  saveFiles();
  if (state.current === path) {
    state.current = null;
    const next = Object.keys(state.files).sort()[0];
    if (next) open(next);
    else view.setState(EditorState.create({ doc: "" }));
  }
  renderTabs();
}

function resetExamples() {
  if (!confirm("Restore the example files (your other files stay)?")) return;
  for (const [k, v] of Object.entries(EXAMPLES)) {
    state.files[k] = v;
    docs.delete(k);
  }
  saveFiles();
  open(state.current in EXAMPLES ? state.current : "Storage.sol");
}

// ---- compiling ----

const worker = new Worker("/solidity/worker.js");
let nextJob = 0;
const jobs = new Map();
worker.onmessage = (e) => {
  const job = jobs.get(e.data.id);
  jobs.delete(e.data.id);
  if (job) job(e.data);
};
const runWorker = (message) =>
  new Promise((resolve) => {
    const id = ++nextJob;
    jobs.set(id, resolve);
    worker.postMessage({ id, ...message });
  });

let diagnostics = []; // {file, line, column, severity, message, from, to}

function showDiagnostics() {
  const doc = view.state.doc;
  const mine = diagnostics
    .filter((d) => d.file === state.current && d.start >= 0)
    .map((d) => ({
      from: Math.min(d.start, doc.length),
      to: Math.min(Math.max(d.end, d.start), doc.length),
      severity: d.severity === "error" ? "error" : "warning",
      message: d.message,
    }));
  view.dispatch(setDiagnostics(view.state, mine));
}

function lineOf(text, offset) {
  let line = 1;
  let last = -1;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      last = i;
    }
  }
  return { line, column: offset - last };
}

async function compile() {
  const main = state.current;
  if (!main) return;
  const status = $("#compile-status");
  status.textContent = "compiling " + main + "…";
  status.className = "";
  $("#compile").disabled = true;
  const started = performance.now();
  const result = await runWorker({
    main,
    files: { ...state.files },
    evmVersion: $("#evm").value,
    optimize: $("#optimize").checked,
  });
  const wall = performance.now() - started;
  $("#compile").disabled = false;
  // Tests and scripts wait for this to change.
  document.body.dataset.compiles = String(Number(document.body.dataset.compiles || 0) + 1);
  if (result.error) {
    status.textContent = "compiler failed: " + result.error;
    status.className = "bad";
    return;
  }
  const { output, input } = result;
  diagnostics = (output.errors || []).map((e) => {
    const loc = e.sourceLocation || {};
    const file = loc.file || "";
    const text = input.sources[file]?.content || "";
    const { line, column } = loc.start >= 0 ? lineOf(text, loc.start) : { line: 0, column: 0 };
    return {
      file,
      line,
      column,
      start: loc.start ?? -1,
      end: loc.end ?? -1,
      severity: e.severity,
      type: e.type,
      message: e.message,
    };
  });
  for (const path of result.missing) {
    diagnostics.push({
      file: "",
      line: 0,
      column: 0,
      start: -1,
      end: -1,
      severity: "error",
      type: "ImportError",
      message: `import "${path}" not found: not a file here, nor in the library`,
    });
  }
  const errors = diagnostics.filter((d) => d.severity === "error");
  renderDiagnostics();
  showDiagnostics();
  const contracts = [];
  for (const [file, byName] of Object.entries(output.contracts || {})) {
    for (const [name, c] of Object.entries(byName)) {
      contracts.push({ file, name, abi: c.abi, bytecode: c.evm?.bytecode?.object || "" });
    }
  }
  state.compiled = { contracts, input, version: result.version, main };
  const ms = result.ms.compile;
  $("#compile-time").textContent = `${Math.round(ms)} ms`;
  $("#compile-time").dataset.compileMs = String(ms);
  $("#compile-time").dataset.wallMs = String(wall);
  $("#compiler-version").textContent = result.version;
  if (errors.length) {
    status.textContent = `${errors.length} error(s)`;
    status.className = "bad";
  } else {
    status.textContent = `compiled ${main} (${Math.round(ms)} ms compile, ${Math.round(wall)} ms in all)`;
    status.className = "ok";
  }
  renderContracts();
}

function renderDiagnostics() {
  $("#diagnostics").replaceChildren(
    ...diagnostics.map((d) =>
      el(
        "li",
        {
          class: "diagnostic " + d.severity,
          "data-file": d.file,
          "data-line": String(d.line),
          onclick: () => d.file && open(d.file, d.line, d.column),
        },
        el("span", { class: "where" }, d.file ? `${d.file}:${d.line}:${d.column}` : "(compiler)"),
        " ",
        el("span", { class: "severity" }, `${d.type || d.severity}:`),
        " ",
        el("span", { class: "message" }, d.message),
      ),
    ),
  );
}

function download(name, text, type = "application/json") {
  const a = el("a", { href: URL.createObjectURL(new Blob([text], { type })), download: name });
  document.body.append(a);
  a.click();
  a.remove();
}

function renderContracts() {
  const list = $("#contract");
  const deployable = (state.compiled?.contracts || []).filter((c) => c.bytecode);
  const main = state.compiled?.main;
  deployable.sort((a, b) => (b.file === main) - (a.file === main));
  list.replaceChildren(...deployable.map((c, i) => el("option", { value: String(i) }, `${c.name} (${c.file})`)));
  list.deployable = deployable;
  renderArtifact();
}

function selected() {
  const list = $("#contract");
  return list.deployable?.[Number(list.value)];
}

function renderArtifact() {
  const c = selected();
  $("#abi").textContent = c ? JSON.stringify(c.abi, null, 2) : "";
  $("#bytecode").textContent = c ? "0x" + c.bytecode : "";
  $("#artifact").hidden = !c;
  renderConstructor();
}

function renderConstructor() {
  const c = selected();
  const box = $("#constructor");
  if (!c) return box.replaceChildren();
  const ctor = c.abi.find((f) => f.type === "constructor");
  box.replaceChildren(...(ctor?.inputs || []).map((p) => inputFor(p)));
}

// ---- chain ----

function inputFor(param) {
  return el("input", {
    class: "arg",
    "data-type": param.type,
    placeholder: `${param.name || "arg"} (${param.type})`,
    title: param.type.endsWith("]") || param.type.startsWith("tuple") ? "JSON, e.g. [1,2]" : param.type,
  });
}

function parseArg(type, text) {
  text = text.trim();
  if (type.endsWith("]") || type.startsWith("tuple")) return JSON.parse(text || "[]");
  if (type === "bool") return text === "true" || text === "1";
  return text;
}

const args = (box) => [...box.querySelectorAll("input.arg")].map((i) => parseArg(i.dataset.type, i.value));

let readProvider = null;
function reader() {
  if (state.signer?.provider && state.signer.kind === "wallet") return state.signer.provider;
  if (!readProvider) {
    readProvider = new JsonRpcProvider(location.origin + "/solidity/rpc", state.config.chainId, {
      staticNetwork: true,
      batchMaxCount: 1,
      pollingInterval: 1000,
    });
  }
  return readProvider;
}

async function chooseSigner() {
  const value = $("#account").value;
  state.signer = null;
  if (value === "wallet" && window.ethereum) {
    const provider = new BrowserProvider(window.ethereum);
    const signer = await provider.getSigner();
    signer.kind = "wallet";
    state.signer = signer;
  } else if (value.startsWith("dev:")) {
    const account = state.config.devAccounts[Number(value.slice(4))];
    const signer = new Wallet(account.key, reader());
    signer.kind = "dev";
    state.signer = signer;
  }
  $("#deploy").disabled = !state.signer;
  await showBalance();
}

async function showBalance() {
  const out = $("#balance");
  if (!state.signer) return (out.textContent = "");
  try {
    const address = await state.signer.getAddress();
    const balance = await reader().getBalance(address);
    out.textContent = `${formatEther(balance)} ETH`;
  } catch (e) {
    out.textContent = "balance unknown: " + message(e);
  }
}

function message(e) {
  return e?.info?.error?.message || e?.error?.message || e?.shortMessage || e?.message || String(e);
}

function renderAccounts() {
  const options = [];
  if (window.ethereum) options.push(el("option", { value: "wallet" }, "Injected wallet"));
  (state.config.devAccounts || []).forEach((a, i) =>
    options.push(el("option", { value: "dev:" + i }, `${a.address} (development account)`)),
  );
  if (!options.length) options.push(el("option", { value: "" }, "no account"));
  $("#account").replaceChildren(...options);
  $("#no-signer").hidden = options.length > 0 && !!(window.ethereum || state.config.devAccounts?.length);
}

async function deploy() {
  const c = selected();
  const out = $("#deploy-status");
  if (!c || !state.signer) return;
  out.textContent = "deploying " + c.name + "…";
  out.className = "";
  try {
    const factory = new ContractFactory(c.abi, "0x" + c.bytecode, state.signer);
    const contract = await factory.deploy(...args($("#constructor")));
    const tx = contract.deploymentTransaction();
    const receipt = await tx.wait();
    const entry = {
      name: c.name,
      file: c.file,
      address: receipt.contractAddress,
      abi: c.abi,
      chainId: state.config.chainId,
      tx: receipt.hash,
      gasUsed: receipt.gasUsed.toString(),
      block: receipt.blockNumber,
    };
    state.deployed.unshift(entry);
    saveDeployed();
    out.textContent = `deployed ${c.name} at ${entry.address} (block ${entry.block}, gas used ${entry.gasUsed})`;
    out.className = "ok";
    renderDeployed();
    showBalance();
  } catch (e) {
    out.textContent = "deploy failed: " + message(e);
    out.className = "bad";
  }
}

function show(value) {
  if (typeof value === "bigint") return value.toString();
  if (Array.isArray(value)) return "[" + value.map(show).join(", ") + "]";
  return String(value);
}

function renderDeployed() {
  const box = $("#deployed");
  box.replaceChildren(
    ...state.deployed.map((d, index) => {
      const iface = new Interface(d.abi);
      const functions = d.abi.filter((f) => f.type === "function");
      return el(
        "details",
        { class: "instance", "data-address": d.address, "data-name": d.name, open: index === 0 },
        el(
          "summary",
          {},
          `${d.name} at `,
          el("code", {}, d.address),
          ` (gas used ${d.gasUsed}) `,
          el(
            "button",
            {
              class: "forget",
              onclick: (e) => {
                e.preventDefault();
                state.deployed.splice(index, 1);
                saveDeployed();
                renderDeployed();
              },
            },
            "forget",
          ),
        ),
        ...functions.map((f) => functionForm(d, iface, f)),
      );
    }),
  );
}

function functionForm(d, iface, f) {
  const view = f.stateMutability === "view" || f.stateMutability === "pure";
  const box = el("div", { class: "function", "data-function": f.name });
  const result = el("pre", { class: "result" });
  const run = async () => {
    result.textContent = "…";
    result.className = "result";
    const fragment = iface.getFunction(
      f.name + "(" + f.inputs.map((i) => ParamType.from(i).format("sighash")).join(",") + ")",
    );
    try {
      const values = args(box);
      if (view) {
        const data = iface.encodeFunctionData(fragment, values);
        const raw = await reader().call({ to: d.address, data });
        const decoded = iface.decodeFunctionResult(fragment, raw);
        result.textContent = fragment.outputs.map((o, i) => `${o.name || i}: ${show(decoded[i])}`).join("\n");
        result.dataset.value = decoded.length === 1 ? show(decoded[0]) : show([...decoded]);
      } else {
        if (!state.signer) throw new Error("no account to send a transaction from");
        const contract = new Contract(d.address, d.abi, state.signer);
        const tx = await contract.getFunction(fragment)(...values);
        const receipt = await tx.wait();
        const events = receipt.logs
          .map((log) => {
            try {
              const parsed = iface.parseLog(log);
              if (!parsed) return null;
              return `${parsed.name}(${parsed.fragment.inputs
                .map((p, i) => `${p.name || i}=${show(parsed.args[i])}`)
                .join(", ")})`;
            } catch {
              return null;
            }
          })
          .filter(Boolean);
        result.textContent =
          `status ${receipt.status === 1 ? "success" : "failed"}, block ${receipt.blockNumber}, ` +
          `gas used ${receipt.gasUsed}\ntx ${receipt.hash}` +
          (events.length ? "\nevents:\n  " + events.join("\n  ") : "");
        result.dataset.status = String(receipt.status);
        result.dataset.events = JSON.stringify(events);
        showBalance();
      }
      result.className = "result ok";
    } catch (e) {
      result.textContent = "failed: " + message(e);
      result.className = "result bad";
    }
  };
  box.append(
    el("button", { class: view ? "call" : "transact", onclick: run }, f.name),
    ...f.inputs.map((p) => inputFor(p)),
    el("span", { class: "kind" }, view ? "call" : "transaction"),
    result,
  );
  return box;
}

// ---- start ----

async function start() {
  const r = await fetch("/solidity/config");
  state.config = await r.json();
  $("#chain").textContent = `chain ${state.config.chainId}`;
  $("#evm").value = state.config.evmVersion;
  if (!state.config.compiler) {
    $("#compile-status").textContent =
      "the compiler is not installed on this aggregator (see docs/SOLIDITY.md: --solidity-assets)";
    $("#compile-status").className = "bad";
    $("#compile").disabled = true;
  }
  $("#dev-accounts").textContent = state.config.devAccounts
    ? `development accounts on (${state.config.devAccounts.length})`
    : "development accounts off";
  renderAccounts();
  const first = Object.keys(state.files).sort();
  open(first.includes("Storage.sol") ? "Storage.sol" : first[0]);
  $("#new-file").onclick = addFile;
  $("#examples").onclick = resetExamples;
  $("#compile").onclick = compile;
  $("#contract").onchange = renderArtifact;
  $("#account").onchange = chooseSigner;
  $("#deploy").onclick = deploy;
  $("#download-abi").onclick = () => {
    const c = selected();
    if (c) download(`${c.name}.abi.json`, JSON.stringify(c.abi, null, 2));
  };
  $("#download-bytecode").onclick = () => {
    const c = selected();
    if (c) download(`${c.name}.bin`, c.bytecode, "text/plain");
  };
  $("#download-input").onclick = () => {
    if (state.compiled) download("input.json", JSON.stringify(state.compiled.input, null, 2));
  };
  renderDeployed();
  await chooseSigner();
  document.body.dataset.ready = "true";
}

start().catch((e) => {
  $("#compile-status").textContent = "the page could not start: " + message(e);
  $("#compile-status").className = "bad";
});

// Headless Chromium drives the aggregator's /solidity page against a real
// network.
//
// Usage: node solidity.mjs <dashboard-url> <dev|off|wallet> <solidity-npm-dir> [<wallet-rpc-url>]
//
// dev: the development accounts are on. Compiles the Storage example (it
//   imports lib/Owned.sol), deploys it with constructor argument 7, reads 7,
//   sends set(42) and sees the ValueChanged event and gas used, reads 42;
//   reloads and finds the contract in the deployed list; a file with a
//   syntax error shows the compiler's message with file and line, and a
//   click opens the file at that line; the OpenZeppelin ERC-20 example
//   compiles, and its compile time is printed next to the same compile by the
//   solc CLI of the same npm package (solcjs --standard-json).
// off: the development accounts are off: the page offers no account, Deploy
//   stays disabled, compiling still works.
// wallet: as dev, through an injected EIP-1193 wallet instead:
//   TestEip1193Wallet (the only stand-in here, for MetaMask's confirmation UI)
//   signs with ethers.js and the key in $WALLET_KEY and sends to its own RPC
//   URL, as MetaMask does; the methods it was asked are listed.
// The page's requests (its worker's included) are recorded and must all go to
// the aggregator's origin. Besides, all of the browser's traffic goes
// through a proxy, loopback included (`<-loopback>`), that forwards only to
// 127.0.0.1: the page works as on a machine cut off from the internet. What
// the proxy refused (Chromium's own services, not the page) is listed.
// stdout: one JSON line with what was seen. Exit codes: 0 done (the caller
// checks the values); 2 failure (stderr).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { JsonRpcProvider, Wallet } from 'ethers';

/** The wallet behind the injected provider: signs here, sends to `rpc`. */
function testWallet(rpc, key, asked) {
  const provider = new JsonRpcProvider(rpc, undefined, { batchMaxCount: 1 });
  const wallet = new Wallet(key, provider);
  return async (method, params) => {
    asked.push(method);
    try {
      switch (method) {
        case 'eth_requestAccounts':
        case 'eth_accounts':
          return { result: [wallet.address] };
        case 'eth_sendTransaction': {
          const [tx] = params;
          const sent = await wallet.sendTransaction({
            to: tx.to || null, data: tx.data, value: tx.value || 0, gasLimit: tx.gas,
          });
          return { result: sent.hash };
        }
        default:
          return { result: await provider.send(method, params || []) };
      }
    } catch (e) {
      return { error: { code: e?.error?.code ?? -32603, message: e?.shortMessage || String(e) } };
    }
  };
}

// The page sees this as window.ethereum (EIP-1193).
const INJECTED = `window.ethereum = {
  isTestEip1193Wallet: true,
  request: ({ method, params }) => window.__testWallet(method, params || []).then((r) => {
    if (r.error) throw Object.assign(new Error(r.error.message), { code: r.error.code });
    return r.result;
  }),
  on() {}, removeListener() {},
};`;

const TIMEOUT_MS = 120_000;

function fail(message) {
  const plain = String(message).replace(/\u001b\[[0-9;]*m/g, '').trimEnd();
  process.stderr.write(`solidity: ${plain}\n`);
  process.exit(2);
}

const [dashboard, mode, npmDir, walletRpc] = process.argv.slice(2);
if (!npmDir || !['dev', 'off', 'wallet'].includes(mode) || (mode === 'wallet' && !walletRpc)) {
  fail('usage: node solidity.mjs <dashboard-url> <dev|off|wallet> <solidity-npm-dir> [<wallet-rpc-url>]');
}
const origin = new URL(dashboard).origin;

async function compileFile(page, file) {
  await page.click(`.tab[data-file="${file}"] .tab-open`);
  const before = await page.evaluate(() => Number(document.body.dataset.compiles || 0));
  await page.click('#compile');
  await page.waitForFunction(
    (prev) => Number(document.body.dataset.compiles || 0) > prev,
    before,
    { timeout: TIMEOUT_MS },
  );
  return {
    status: await page.textContent('#compile-status'),
    ok: (await page.getAttribute('#compile-status', 'class')) === 'ok',
    compileMs: Number(await page.getAttribute('#compile-time', 'data-compile-ms')),
    wallMs: Number(await page.getAttribute('#compile-time', 'data-wall-ms')),
    contracts: await page.$$eval('#contract option', (os) => os.map((o) => o.textContent)),
  };
}

async function selectContract(page, name) {
  const value = await page.$$eval(
    '#contract option',
    (os, name) => os.find((o) => o.textContent.startsWith(name + ' '))?.value,
    name,
  );
  if (value === undefined) throw new Error(`no contract ${name} to deploy`);
  await page.selectOption('#contract', value);
}

/** Runs a function of a deployed contract; waits for its result. */
async function run(page, address, fn, args = []) {
  const box = `.instance[data-address="${address}"] .function[data-function="${fn}"]`;
  await page.$eval(`.instance[data-address="${address}"]`, (d) => { d.open = true; });
  const inputs = await page.$$(`${box} input.arg`);
  for (let i = 0; i < args.length; i++) await inputs[i].fill(String(args[i]));
  await page.$eval(`${box} .result`, (r) => {
    r.className = 'result';
    r.textContent = '';
    delete r.dataset.value;
    delete r.dataset.status;
  });
  await page.click(`${box} button`);
  await page.waitForFunction(
    (sel) => {
      const r = document.querySelector(sel);
      return r && /\bok\b|\bbad\b/.test(r.className);
    },
    `${box} .result`,
    { timeout: TIMEOUT_MS },
  );
  return page.$eval(`${box} .result`, (r) => ({
    ok: r.classList.contains('ok'),
    text: r.textContent,
    value: r.dataset.value,
    status: r.dataset.status,
    events: r.dataset.events ? JSON.parse(r.dataset.events) : [],
  }));
}

/** The same ERC-20 compile with the solc CLI of the same npm package. */
function cliCompile(input) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'solc-cli-'));
  try {
    const started = process.hrtime.bigint();
    const out = execFileSync(
      process.execPath,
      [path.join(npmDir, 'solc/solc.js'), '--standard-json', '--base-path', dir, '--include-path', npmDir],
      { input: JSON.stringify(input), maxBuffer: 256 * 1024 * 1024 },
    ).toString();
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    const json = JSON.parse(out.slice(out.indexOf('{')));
    const errors = (json.errors || []).filter((e) => e.severity === 'error');
    return { ms, errors: errors.length, sources: Object.keys(json.sources || {}).length };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A forward proxy that records every request and passes on only those to
 * 127.0.0.1. */
function recordingProxy(requests) {
  const server = http.createServer((req, res) => {
    requests.push(req.url);
    let target;
    try {
      target = new URL(req.url);
    } catch {
      res.writeHead(400).end();
      return;
    }
    if (target.hostname !== '127.0.0.1' || target.protocol !== 'http:') {
      res.writeHead(403).end('not loopback');
      return;
    }
    const upstream = http.request(
      { host: '127.0.0.1', port: target.port || 80, path: target.pathname + target.search, method: req.method, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.writeHead(502).end());
    req.pipe(upstream);
  });
  // HTTPS and WebSocket tunnels: recorded, never opened.
  server.on('connect', (req, socket) => {
    requests.push(`connect://${req.url}`);
    socket.end('HTTP/1.1 403 Forbidden\r\n\r\n');
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

async function main() {
  const proxied = [];
  const proxy = await recordingProxy(proxied);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      `--proxy-server=http://127.0.0.1:${proxy.address().port}`, '--proxy-bypass-list=<-loopback>'],
  });
  const result = { mode };
  try {
    const context = await browser.newContext({ acceptDownloads: true });
    context.setDefaultTimeout(TIMEOUT_MS);
    const asked = [];
    if (mode === 'wallet') {
      await context.exposeFunction('__testWallet', testWallet(walletRpc, process.env.WALLET_KEY, asked));
      await context.addInitScript(INJECTED);
    }
    const page = await context.newPage();
    const requests = [];
    context.on('request', (r) => requests.push(r.url()));
    page.on('dialog', (d) => d.accept('Broken.sol'));
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`${origin}/solidity`);
    await page.waitForSelector('body[data-ready="true"]');
    result.chainLabel = await page.textContent('#chain');
    result.accounts = await page.$$eval('#account option', (os) => os.map((o) => o.value));
    result.deployDisabled = await page.$eval('#deploy', (b) => b.disabled);
    result.noSignerShown = await page.$eval('#no-signer', (p) => !p.hidden);

    const storage = await compileFile(page, 'Storage.sol');
    result.storage = { ok: storage.ok, status: storage.status, contracts: storage.contracts };
    if (!storage.ok) throw new Error(`Storage.sol did not compile: ${storage.status}`);
    // The ABI and bytecode are shown and downloadable.
    await selectContract(page, 'Storage');
    result.abiShown = (await page.textContent('#abi')).includes('"ValueChanged"');
    result.bytecodeShown = /^0x[0-9a-f]{100,}$/.test(await page.textContent('#bytecode'));
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-abi')]);
    const abiFile = await download.path();
    result.abiDownload = {
      name: download.suggestedFilename(),
      functions: JSON.parse(fs.readFileSync(abiFile, 'utf8')).filter((f) => f.type === 'function').map((f) => f.name).sort(),
    };

    if (mode === 'dev' || mode === 'wallet') {
      await page.fill('#constructor input.arg', '7');
      await page.click('#deploy');
      await page.waitForFunction(
        () => /\b(ok|bad)\b/.test(document.querySelector('#deploy-status').className),
        null,
        { timeout: TIMEOUT_MS },
      );
      result.deployStatus = await page.textContent('#deploy-status');
      if ((await page.getAttribute('#deploy-status', 'class')) !== 'ok') throw new Error(result.deployStatus);
      const address = await page.getAttribute('.instance', 'data-address');
      result.address = address;
      result.first = await run(page, address, 'get');
      result.set = await run(page, address, 'set', [42]);
      result.after = await run(page, address, 'get');
      // The deployed list survives a reload.
      await page.reload();
      await page.waitForSelector('body[data-ready="true"]');
      result.afterReload = await page.$$eval('.instance', (ds) => ds.map((d) => d.dataset.address));
      result.reloadRead = await run(page, address, 'get');
    } else {
      // No account: a transaction cannot even be attempted.
      result.deployDisabledAfterCompile = await page.$eval('#deploy', (b) => b.disabled);
    }

    // A syntax error: the message, its file and line; a click goes there.
    await page.click('#new-file');
    await page.waitForSelector('.tab.active[data-file="Broken.sol"]');
    await page.click('.cm-content');
    await page.keyboard.press('Control+End');
    await page.keyboard.insertText('contract Broken {\n    function f() public {\n        uint x = ;\n    }\n}\n');
    const broken = await compileFile(page, 'Broken.sol');
    result.broken = {
      ok: broken.ok,
      diagnostics: await page.$$eval('.diagnostic.error', (ls) =>
        ls.map((l) => ({ file: l.dataset.file, line: Number(l.dataset.line), text: l.textContent }))),
    };
    await page.click('.tab[data-file="Storage.sol"] .tab-open');
    await page.click('.diagnostic.error');
    result.broken.opened = await page.getAttribute('.tab.active', 'data-file');
    result.broken.cursorLine = await page.evaluate(() => {
      const line = document.querySelector('.cm-activeLine');
      return line ? line.textContent : null;
    });
    result.brokenMarked = await page.$$eval('.cm-lintRange-error', (rs) => rs.length);

    // OpenZeppelin's ERC-20: compile time in the page and with the CLI.
    const token = await compileFile(page, 'Token.sol');
    const again = await compileFile(page, 'Token.sol');
    result.token = { ok: token.ok, status: token.status, contracts: token.contracts };
    const [inputDownload] = await Promise.all([page.waitForEvent('download'), page.click('#download-input')]);
    const input = JSON.parse(fs.readFileSync(await inputDownload.path(), 'utf8'));
    result.token.sources = Object.keys(input.sources).length;
    const cli = cliCompile(input);
    // Cold: a new page, so a new worker loads soljson before compiling, as
    // the CLI process does.
    await page.reload();
    await page.waitForSelector('body[data-ready="true"]');
    const cold = await compileFile(page, 'Token.sol');
    const pageMs = Math.min(token.wallMs, again.wallMs);
    result.timing = {
      pageCompileMs: Math.round(Math.min(token.compileMs, again.compileMs)),
      pageWallMs: Math.round(pageMs),
      pageColdMs: Math.round(cold.wallMs),
      cliWallMs: Math.round(cli.ms),
      cliErrors: cli.errors,
      cliSources: cli.sources,
      ratio: Number((pageMs / cli.ms).toFixed(2)),
      target: 3,
    };
    process.stderr.write(
      `solidity: OpenZeppelin ERC-20 compile: page ${result.timing.pageWallMs} ms ` +
        `(solc ${result.timing.pageCompileMs} ms; ${result.timing.pageColdMs} ms with loading solc), ` +
        `solc CLI ${result.timing.cliWallMs} ms, ratio ${result.timing.ratio} (target within 3x)\n`,
    );

    result.pageErrors = errors;
    result.walletAsked = [...new Set(asked)].sort();
    result.walletSent = asked.filter((m) => m === 'eth_sendTransaction').length;
    result.requests = requests.length;
    result.proxied = proxied.filter((u) => u.startsWith(origin + '/')).length;
    result.refusedBrowserRequests = [...new Set(proxied.filter((u) => !u.startsWith('http://127.0.0.1:')))];
    result.offOrigin = [...new Set(requests.filter((u) => !u.startsWith(origin + '/') && !/^(data|blob):/.test(u)))];
    result.soljsonFetched = requests.some((u) => u === `${origin}/solidity/soljson.js`);
    result.libraryFetched = requests.filter((u) => u.startsWith(`${origin}/solidity/lib/@openzeppelin/`)).length;
  } finally {
    await browser.close();
    proxy.closeAllConnections();
    proxy.close();
  }
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((e) => fail(e && e.stack ? e.stack : e));

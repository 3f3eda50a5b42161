// Headless Chromium check of the dashboard's "Add to MetaMask" button and of
// the gateway's CORS allow-list.
//
// Usage: node wallet-button.mjs <dashboard-url> <gateway-url> <gateway-cert.pem> <allowed-port> <other-port>
//
// 1. With FakeEip1193Provider injected as window.ethereum (a test stand-in
//    for MetaMask's UI, the only fake here) the button's wallet request is
//    recorded.
// 2. Without any wallet the button shows the values to copy.
// 3. Pages served from http://127.0.0.1:<allowed-port> and <other-port> call
//    eth_chainId on the gateway with fetch(): the browser lets only the
//    allowed origin read the answer.
// Chromium trusts the gateway's certificate by its key only
// (--ignore-certificate-errors-spki-list), not every certificate.
// stdout: one JSON line {"requests":[…],"values":{…},"cors":{"allowed":"…","other":"…"}}
// Exit codes: 0 done (the caller checks the values); 2 failure (stderr).
import http from 'node:http';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { chromium } from 'playwright-core';

const TIMEOUT_MS = 60_000;

function fail(message) {
  const plain = String(message).replace(/\u001b\[[0-9;]*m/g, '').trimEnd();
  process.stderr.write(`wallet-button: ${plain}\n`);
  process.exit(2);
}

const [dashboard, gateway, certPath, allowedPort, otherPort] = process.argv.slice(2);
if (!otherPort) fail('usage: node wallet-button.mjs <dashboard-url> <gateway-url> <cert.pem> <allowed-port> <other-port>');

// A page on another origin that calls the gateway from the browser.
function servePage(port) {
  const html = `<!doctype html><title>pending</title><script>
fetch(${JSON.stringify(gateway)}, {method: 'POST', headers: {'content-type': 'application/json'},
  body: JSON.stringify({jsonrpc: '2.0', id: 1, method: 'eth_chainId', params: []})})
  .then(r => r.json()).then(v => { document.title = 'ok:' + v.result; },
                          e => { document.title = 'blocked:' + e.name; });
</script>`;
  const server = http.createServer((_, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(html);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(port), '127.0.0.1', () => resolve(server));
  });
}

async function main() {
  const pem = fs.readFileSync(certPath, 'utf8');
  const spki = new crypto.X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
  const pin = crypto.createHash('sha256').update(spki).digest('base64');
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      `--ignore-certificate-errors-spki-list=${pin}`],
  });
  const watchdog = setTimeout(() => fail('timed out'), 3 * TIMEOUT_MS);
  try {
    // 1. With a wallet.
    const withWallet = await browser.newContext();
    await withWallet.addInitScript(() => {
      // FakeEip1193Provider: stands in for MetaMask's confirmation UI.
      const requests = [];
      window.__fakeWalletRequests = requests;
      window.ethereum = {
        isFakeEip1193Provider: true,
        request: async (args) => {
          requests.push(JSON.parse(JSON.stringify(args)));
          if (args && args.method === 'wallet_addEthereumChain') return null;
          const e = new Error('FakeEip1193Provider: unsupported method');
          e.code = 4200;
          throw e;
        },
      };
    });
    const page = await withWallet.newPage();
    await page.goto(dashboard);
    await page.click('#wallet-add', { timeout: TIMEOUT_MS });
    await page.waitForFunction(
      () => document.getElementById('wallet-status').textContent === 'added to your wallet',
      null, { timeout: TIMEOUT_MS });
    const requests = await page.evaluate(() => window.__fakeWalletRequests);
    const valuesShownWithWallet = await page.isVisible('#wallet-values');

    // 2. Without a wallet.
    const plain = await (await browser.newContext()).newPage();
    await plain.goto(dashboard);
    await plain.click('#wallet-add', { timeout: TIMEOUT_MS });
    await plain.waitForSelector('#wallet-values', { state: 'visible', timeout: TIMEOUT_MS });
    const values = await plain.evaluate(() => Object.fromEntries(
      [...document.querySelectorAll('#wallet-fields input')].map((i) => [i.dataset.field, i.value])));

    // 3. CORS.
    const servers = [await servePage(allowedPort), await servePage(otherPort)];
    const cors = {};
    for (const [name, port] of [['allowed', allowedPort], ['other', otherPort]]) {
      const p = await (await browser.newContext()).newPage();
      await p.goto(`http://127.0.0.1:${port}/`);
      await p.waitForFunction(() => document.title !== 'pending', null, { timeout: TIMEOUT_MS });
      cors[name] = await p.title();
    }
    servers.forEach((s) => s.close());
    console.log(JSON.stringify({ requests, valuesShownWithWallet, values, cors }));
  } finally {
    clearTimeout(watchdog);
    await browser.close();
  }
}

main().then(() => process.exit(0), (e) => fail(e && e.stack ? e.stack : e));

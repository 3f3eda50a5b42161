// Headless-browser check of the dashboard's Signers panel and its operator
// form against a running aggregator started with an admin token.
//
// Usage: node signers.mjs <url> <admin-token> <expected-signers> <quorum-target> [<remove-target>]
//
// The page must list <expected-signers> signers. Then, through the form: a
// wrong token (401), an `add` of an unknown node (400), a bad enode to admit
// (400), and `remove <quorum-target>` (expected to break the quorum: 422).
// With <remove-target>: `remove <remove-target>` through the form, then the
// panel must show the change done (with its block) and one signer fewer in
// the list, without a reload.
// stdout, one JSON line:
//   {"signers":[{"name":..,"address":..}],"before_token":..,"unauthorized":..,
//    "after_401_session":..,"unknown":..,"bad_enode":..,"quorum":..,
//    "change":..,"admitted_shown":..,"session_token":..,"local_storage":..,"url":..,
//    "removal":..,"removal_title":..,"removal_detail":..,"signers_after":[..]}
// Exit codes: 0 ok; 2 any failure (message on stderr).

import { launchChromium } from './chromium.mjs';

const TIMEOUT_MS = 60_000;
const WATCHDOG_MS = 480_000;
const CHANGE_TIMEOUT_MS = 300_000;
const TOKEN_KEY = 'aggregator-admin-token';

function fail(message) {
  const plain = String(message).replace(/\u001b\[[0-9;]*m/g, '').trimEnd();
  process.stderr.write(`signers: ${plain}\n`);
  process.exit(2);
}

// Sends one form request and waits for its answer in #signer-result.
async function send(page, token, action, target) {
  await page.fill('#admin-token', token);
  await page.selectOption('#signer-action', action);
  await page.fill('#signer-target', target);
  await page.evaluate(() => { document.getElementById('signer-result').textContent = ''; });
  await page.click('#signer-submit');
  await page.waitForFunction(
    () => {
      const t = document.getElementById('signer-result').textContent.trim();
      return t !== '' && t !== 'sending…';
    },
    null,
    { timeout: TIMEOUT_MS, polling: 100 },
  );
  return (await page.textContent('#signer-result')).trim();
}

async function main() {
  const [url, token, countArg, quorumTarget, removeTarget] = process.argv.slice(2);
  if (!url || !token || !countArg || !quorumTarget) {
    fail('usage: node signers.mjs <url> <admin-token> <expected-signers> <quorum-target>');
  }
  const expected = Number(countArg);
  const watchdog = setTimeout(() => fail(`gave up after ${WATCHDOG_MS / 1000} s`), WATCHDOG_MS);
  watchdog.unref();

  const browser = await launchChromium();
  try {
    const page = await (await browser.newContext({ viewport: { width: 1440, height: 900 } })).newPage();
    page.on('pageerror', (err) => process.stderr.write(`page error: ${err.message}\n`));
    await page.goto(url, { waitUntil: 'domcontentloaded', timeout: TIMEOUT_MS });
    try {
      await page.waitForFunction(
        (n) => document.querySelectorAll('#signer-list .signer-row').length === n &&
          Array.from(document.querySelectorAll('#signer-list .signer-name')).every((e) => e.textContent !== '—'),
        expected,
        { timeout: TIMEOUT_MS, polling: 250 },
      );
    } catch (err) {
      const rows = await page.evaluate(() => document.getElementById('signer-list').textContent).catch(() => null);
      throw new Error(`the panel did not list ${expected} named signers: ${JSON.stringify(rows)}`);
    }
    const out = {};
    out.signers = await page.evaluate(() =>
      Array.from(document.querySelectorAll('#signer-list .signer-row')).map((li) => ({
        name: li.querySelector('.signer-name').textContent,
        address: li.getAttribute('data-address'),
      })),
    );
    out.before_token = (await page.textContent('#signer-change-title')).trim();

    out.unauthorized = await send(page, 'not-the-token', 'add', 'signer-1');
    out.after_401_session = await page.evaluate((k) => sessionStorage.getItem(k), TOKEN_KEY);
    out.unknown = await send(page, token, 'add', 'no-such-node');
    out.bad_enode = await send(page, '', 'admit', 'enode://not-a-key@127.0.0.1:1');
    out.quorum = await send(page, '', 'remove', quorumTarget);

    // With the token kept, the polled views fill in.
    await page.waitForFunction(
      () => document.getElementById('signer-change-title').textContent.startsWith('No signer change') &&
        !document.getElementById('admitted').hidden,
      null,
      { timeout: TIMEOUT_MS, polling: 250 },
    );
    out.change = (await page.textContent('#signer-change-title')).trim();
    out.admitted_shown = true;
    out.session_token = await page.evaluate((k) => sessionStorage.getItem(k), TOKEN_KEY);
    out.local_storage = await page.evaluate(() => localStorage.length);
    out.token_field = await page.inputValue('#admin-token');
    out.url = page.url();

    if (removeTarget) {
      out.removal = await send(page, '', 'remove', removeTarget);
      if (!out.removal.startsWith('started')) throw new Error(`remove ${removeTarget} did not start: ${out.removal}`);
      try {
        await page.waitForFunction(
          (n) => /, (done|failed)$/.test(document.getElementById('signer-change-title').textContent.trim()) &&
            document.querySelectorAll('#signer-list .signer-row').length === n,
          expected - 1,
          { timeout: CHANGE_TIMEOUT_MS, polling: 250 },
        );
      } catch (err) {
        const seen = await page.evaluate(() => [
          document.getElementById('signer-change-title').textContent,
          document.getElementById('signer-change-detail').textContent,
          document.querySelectorAll('#signer-list .signer-row').length,
        ]).catch(() => null);
        throw new Error(`the removal did not show as finished with ${expected - 1} signers: ${JSON.stringify(seen)}`);
      }
      out.removal_title = (await page.textContent('#signer-change-title')).trim();
      out.removal_detail = (await page.textContent('#signer-change-detail')).trim();
      out.signers_after = await page.evaluate(() =>
        Array.from(document.querySelectorAll('#signer-list .signer-row')).map((li) => li.getAttribute('data-address')),
      );
    }
    process.stdout.write(JSON.stringify(out) + '\n');
  } finally {
    await browser.close().catch(() => {});
    clearTimeout(watchdog);
  }
}

main().then(
  () => process.exit(0),
  (err) => fail(err && err.message ? err.message : String(err)),
);

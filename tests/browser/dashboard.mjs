// Headless-browser check of the live dashboard.
//
// Usage: node dashboard.mjs <url> <expected-node-count> <screenshot-path>
//
// stdout, exactly two JSON lines:
//   {"nodes":[{"name":"signer-1","head":123},...],"best_first":123}
//   {"best_later":130,"advanced":true}
// Exit codes: 0 ok; 1 the best block did not advance within 30 s (the
// screenshot is still saved); 2 any other failure (message on stderr).

import { launchChromium } from './chromium.mjs';

const FIRST_TIMEOUT_MS = 60_000;
const ADVANCE_TIMEOUT_MS = 30_000;
const WATCHDOG_MS = 150_000;

function fail(message, code = 2) {
  // Playwright's messages carry terminal colour codes.
  const plain = String(message).replace(/\u001b\[[0-9;]*m/g, '').trimEnd();
  process.stderr.write(`dashboard: ${plain}\n`);
  process.exit(code);
}

function usage() {
  fail('usage: node dashboard.mjs <url> <expected-node-count> <screenshot-path>');
}

async function main() {
  const [url, countArg, shotPath] = process.argv.slice(2);
  if (!url || !countArg || !shotPath) usage();
  const expected = Number(countArg);
  if (!Number.isInteger(expected) || expected < 0) fail(`bad expected-node-count: ${countArg}`);

  const watchdog = setTimeout(() => fail(`gave up after ${WATCHDOG_MS / 1000} s`), WATCHDOG_MS);
  watchdog.unref();

  const browser = await launchChromium();
  let exitCode = 0;
  try {
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    const page = await context.newPage();
    page.on('pageerror', (err) => process.stderr.write(`page error: ${err.message}\n`));
    page.on('console', (msg) => {
      if (msg.type() === 'error') process.stderr.write(`page console: ${msg.text()}\n`);
    });

    // The server may still be starting: retry the first load within the
    // same 60 s budget as the wait for data.
    const deadline = Date.now() + FIRST_TIMEOUT_MS;
    for (;;) {
      try {
        const resp = await page.goto(url, { waitUntil: 'domcontentloaded', timeout: Math.max(1000, deadline - Date.now()) });
        if (resp && !resp.ok()) throw new Error(`GET ${url}: HTTP ${resp.status()}`);
        break;
      } catch (err) {
        if (Date.now() + 1000 >= deadline) throw err;
        await new Promise((r) => setTimeout(r, 1000));
      }
    }

    try {
      await page.waitForFunction(
        (n) => {
          const best = document.getElementById('best-block');
          return (
            document.querySelectorAll('tr.node-row').length >= n &&
            !!best &&
            /^\d+$/.test(best.textContent.trim())
          );
        },
        expected,
        { timeout: Math.max(1000, deadline - Date.now()), polling: 250 },
      );
    } catch (err) {
      const seen = await page
        .evaluate(() => ({
          rows: document.querySelectorAll('tr.node-row').length,
          best: document.getElementById('best-block')?.textContent ?? null,
        }))
        .catch(() => null);
      throw new Error(
        `page did not show ${expected} node rows and a best block within ${FIRST_TIMEOUT_MS / 1000} s` +
          (seen ? ` (rows: ${seen.rows}, best-block: ${JSON.stringify(seen.best)})` : ''),
      );
    }

    const first = await page.evaluate(() => {
      const nodes = Array.from(document.querySelectorAll('tr.node-row')).map((tr) => {
        const text = (tr.querySelector('.node-head')?.textContent ?? '').trim();
        return {
          name: tr.getAttribute('data-node-name') ?? '',
          head: /^\d+$/.test(text) ? Number(text) : null,
        };
      });
      const best = Number(document.getElementById('best-block').textContent.trim());
      return { nodes, best_first: best };
    });
    process.stdout.write(JSON.stringify(first) + '\n');

    let advanced = true;
    try {
      await page.waitForFunction(
        (b) => {
          const t = (document.getElementById('best-block')?.textContent ?? '').trim();
          return /^\d+$/.test(t) && Number(t) > b;
        },
        first.best_first,
        { timeout: ADVANCE_TIMEOUT_MS, polling: 250 },
      );
    } catch (err) {
      if (err && err.name !== 'TimeoutError') throw err;
      advanced = false;
    }
    const laterText = await page.evaluate(() => (document.getElementById('best-block')?.textContent ?? '').trim());
    const later = /^\d+$/.test(laterText) ? Number(laterText) : null;
    advanced = advanced && later !== null && later > first.best_first;
    process.stdout.write(JSON.stringify({ best_later: later, advanced }) + '\n');

    await page.screenshot({ path: shotPath, fullPage: true, timeout: 30_000 });
    if (!advanced) {
      process.stderr.write(`dashboard: best block stayed at ${first.best_first} for ${ADVANCE_TIMEOUT_MS / 1000} s\n`);
      exitCode = 1;
    }
  } finally {
    await browser.close().catch(() => {});
    clearTimeout(watchdog);
  }
  return exitCode;
}

main().then(
  (code) => process.exit(code),
  (err) => fail(err && err.message ? err.message : String(err)),
);

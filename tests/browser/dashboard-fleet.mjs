// Headless-browser check of the dashboard's node table at fleet scale: one
// page of 100 rows sorted by name, a pager, a filter by name or id that takes
// any text as plain text, and rows that stay live.
//
// Usage: node dashboard-fleet.mjs <url> <node-count>
//
// The nodes are named node-0 … node-<count - 1> and each reports a new block
// every second. stdout, one JSON line:
//   {"pages":…, "last_page_rows":…, "filtered_rows":…, "page_errors":0}
// Exit codes: 0 every check held; 1 a check failed; 2 any other failure
// (message on stderr).

import { launchChromium, openPage } from './chromium.mjs';

const PER_PAGE = 100;
const WAIT_MS = 60_000;

class CheckFailed extends Error {}

function fail(message, code = 2) {
  const plain = String(message).replace(/\u001b\[[0-9;]*m/g, '').trimEnd();
  process.stderr.write(`dashboard-fleet: ${plain}\n`);
  process.exit(code);
}

// Polls `probe` until it returns a truthy value; fails the check with `what`
// and the last value seen when WAIT_MS pass.
async function until(what, probe) {
  const deadline = Date.now() + WAIT_MS;
  let last;
  for (;;) {
    last = await probe();
    if (last && last.ok !== false) return last;
    if (Date.now() > deadline) throw new CheckFailed(`${what}: last seen ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function main() {
  const [url, countArg] = process.argv.slice(2);
  const count = Number(countArg);
  if (!url || !Number.isInteger(count) || count <= 2 * PER_PAGE) {
    fail(`usage: node dashboard-fleet.mjs <url> <node-count above ${2 * PER_PAGE}>`);
  }
  const pages = Math.ceil(count / PER_PAGE);
  const lastPageRows = count - (pages - 1) * PER_PAGE;
  const browser = await launchChromium();
  try {
    const { page, errors: pageErrors } = await openPage(browser);
    await page.goto(url, { waitUntil: 'domcontentloaded', timeout: WAIT_MS });

    const table = () => page.evaluate(() => {
      const rows = Array.from(document.querySelectorAll('#nodes-body tr'));
      const name = (tr) => tr && tr.querySelector('.node-name').textContent;
      return {
        rows: rows.length,
        first: name(rows[0]),
        last: name(rows[rows.length - 1]),
        range: document.getElementById('nodes-range').textContent,
        pager: !document.getElementById('nodes-pager').hidden,
        filter: !document.getElementById('nodes-filter-box').hidden,
        prev: !document.getElementById('nodes-prev').disabled,
        next: !document.getElementById('nodes-next').disabled,
        noMatch: !document.getElementById('nodes-no-match').hidden,
      };
    });
    const head = (name) => page.evaluate((n) => {
      const tr = Array.from(document.querySelectorAll('#nodes-body tr'))
        .find((r) => r.querySelector('.node-name').textContent === n);
      return tr ? Number.parseInt(tr.querySelector('.c-head').textContent.replace(/\D/g, ''), 10) : null;
    }, name);
    const liveHead = async (name) => {
      const before = await until(`${name} shown with a head`, () => head(name));
      await until(`${name}'s head to advance past ${before}`, async () => {
        const now = await head(name);
        return now > before ? now : { ok: false, now };
      });
    };
    const expect = (what, got, want) => {
      for (const [k, v] of Object.entries(want)) {
        if (got[k] !== v) throw new CheckFailed(`${what}: ${k} is ${JSON.stringify(got[k])}, want ${JSON.stringify(v)} (${JSON.stringify(got)})`);
      }
    };
    const fmt = (n) => n.toLocaleString('en-US');

    // The first page, in name order (numbers compared as numbers).
    const first = await until(`the first page of ${count} nodes`, async () => {
      const t = await table();
      return t.range === `1–${PER_PAGE} of ${fmt(count)}` && t.rows === PER_PAGE ? t : { ok: false, ...t };
    });
    expect('first page', first, { first: 'node-0', last: `node-${PER_PAGE - 1}`, pager: true, filter: true, prev: false, next: true });
    await liveHead('node-0');

    // To the last page, and a careless click past it.
    for (let i = 1; i < pages; i++) await page.click('#nodes-next');
    const lastRange = `${fmt((pages - 1) * PER_PAGE + 1)}–${fmt(count)} of ${fmt(count)}`;
    const last = await until('the last page', async () => {
      const t = await table();
      return t.range === lastRange ? t : { ok: false, ...t };
    });
    expect('last page', last, { rows: lastPageRows, first: `node-${(pages - 1) * PER_PAGE}`, last: `node-${count - 1}`, prev: true, next: false });
    await page.click('#nodes-next', { force: true });
    expect('a click past the last page', await table(), { range: lastRange, rows: lastPageRows });
    await liveHead(`node-${count - 1}`);

    // The filter: by name, whatever the case; any text is plain text.
    await page.fill('#nodes-filter', 'NODE-24');
    const filtered = await until('the filter NODE-24', async () => {
      const t = await table();
      return t.first === 'node-24' ? t : { ok: false, ...t };
    });
    const want = Array.from({ length: count }, (_, i) => `node-${i}`).filter((n) => n.includes('node-24')).length;
    expect('filter NODE-24', filtered, { rows: want, pager: false, filter: true, noMatch: false });
    for (const hostile of ['.*(', '<img src=x onerror="window.__pwned=1">', '\\', '%00']) {
      await page.fill('#nodes-filter', hostile);
      expect(`filter ${JSON.stringify(hostile)}`, await table(), { rows: 0, noMatch: true, pager: false, filter: true });
    }
    if (await page.evaluate(() => window.__pwned !== undefined)) throw new CheckFailed('filter text ran as markup');
    await page.fill('#nodes-filter', '');
    expect('the filter cleared', await table(), { rows: PER_PAGE, first: 'node-0', range: `1–${PER_PAGE} of ${fmt(count)}`, noMatch: false });

    if (pageErrors()) throw new CheckFailed(`${pageErrors()} page error(s)`);
    process.stdout.write(`${JSON.stringify({ pages, last_page_rows: last.rows, filtered_rows: filtered.rows, page_errors: pageErrors() })}\n`);
  } catch (e) {
    if (e instanceof CheckFailed) fail(e.message, 1);
    throw e;
  } finally {
    await browser.close();
  }
}

main().catch((e) => fail(e?.stack || e));

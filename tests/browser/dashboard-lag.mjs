// How far the rendered dashboard falls behind a load of one block per second.
//
// Usage: node dashboard-lag.mjs <url> <origin-epoch-ms> <seconds>
//
// The load (aggregator/benches/load.rs) has every reporter write block n by
// origin + (n - 1) s + 200 ms. Every 250 ms this reads the best block the
// page shows; when it shows n while block n + 1 is due, it is behind by the
// time since n + 1 was due. Chromium's own counters (DevTools Performance
// domain) then say where the page's main thread went, in ms per second of
// the measurement: all tasks, script, layout and style. stdout, one JSON line:
//   {"samples":…, "behind_ms_p50":…, "behind_ms_p99":…, "behind_ms_max":…,
//    "last_shown":…, "page_errors":…, "main_thread_ms_per_s": {"tasks":…,
//    "script":…, "layout":…, "style":…}}
// Exit codes: 0 measured; 2 any failure (message on stderr).

import { launchChromium, openPage } from './chromium.mjs';

const SAMPLE_MS = 250;
const LAST_JITTER_MS = 200;

function fail(message) {
  const plain = String(message).replace(/\u001b\[[0-9;]*m/g, '').trimEnd();
  process.stderr.write(`dashboard-lag: ${plain}\n`);
  process.exit(2);
}

const dueMs = (origin, n) => origin + (n - 1) * 1000 + LAST_JITTER_MS;

async function main() {
  const [url, originArg, secondsArg] = process.argv.slice(2);
  const origin = Number(originArg);
  const seconds = Number(secondsArg);
  if (!url || !Number.isFinite(origin) || !(seconds > 0)) {
    fail('usage: node dashboard-lag.mjs <url> <origin-epoch-ms> <seconds>');
  }
  const browser = await launchChromium();
  try {
    const { page, errors: pageErrors } = await openPage(browser);
    const devtools = await page.context().newCDPSession(page);
    await devtools.send('Performance.enable');
    const counters = async () => {
      const { metrics } = await devtools.send('Performance.getMetrics');
      return Object.fromEntries(metrics.map((m) => [m.name, m.value]));
    };
    await page.goto(url, { waitUntil: 'domcontentloaded', timeout: 60_000 });
    // Measure from the second block on: the first needs the page loaded.
    const start = dueMs(origin, 2);
    const end = origin + seconds * 1000;
    while (Date.now() < start) await new Promise((r) => setTimeout(r, 50));
    const before = await counters();
    const measuredFrom = Date.now();
    const behind = [];
    let shown = 0;
    while (Date.now() < end) {
      const text = await page.textContent('#best-block', { timeout: 5_000 });
      const now = Date.now();
      shown = Number.parseInt(text, 10) || 0;
      const nextDue = dueMs(origin, shown + 1);
      behind.push(Math.max(0, now - nextDue));
      await new Promise((r) => setTimeout(r, SAMPLE_MS));
    }
    const after = await counters();
    const wallS = (Date.now() - measuredFrom) / 1000;
    // The counters are seconds of main-thread time.
    const perS = (name) => Math.round(((after[name] - before[name]) * 1000) / wallS);
    behind.sort((a, b) => a - b);
    const at = (p) => behind[Math.min(behind.length - 1, Math.floor(behind.length * p))] ?? null;
    process.stdout.write(
      `${JSON.stringify({
        samples: behind.length,
        behind_ms_p50: at(0.5),
        behind_ms_p99: at(0.99),
        behind_ms_max: at(1),
        last_shown: shown,
        page_errors: pageErrors(),
        main_thread_ms_per_s: {
          tasks: perS('TaskDuration'),
          script: perS('ScriptDuration'),
          layout: perS('LayoutDuration'),
          style: perS('RecalcStyleDuration'),
        },
      })}\n`,
    );
  } finally {
    await browser.close();
  }
}

main().catch((e) => fail(e?.stack || e));

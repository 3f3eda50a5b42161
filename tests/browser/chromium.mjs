// Headless Chromium as every browser check here starts it: Debian's package
// (CHROMIUM_BIN overrides the path), no sandbox, nothing fetched in the
// background.
import { chromium } from 'playwright-core';

const CHROMIUM_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export function launchChromium() {
  const executablePath = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
  return chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS });
}

// A desktop-sized page whose uncaught errors are written to stderr and
// counted: `errors()` is how many so far.
export async function openPage(browser) {
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  let errors = 0;
  page.on('pageerror', (err) => {
    errors += 1;
    process.stderr.write(`page error: ${err.message}\n`);
  });
  return { page, errors: () => errors };
}

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

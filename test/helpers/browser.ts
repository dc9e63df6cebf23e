/**
 * Debian's Chromium, driven by playwright-core (no browser is downloaded). Under CI a missing
 * browser fails the browser tests instead of skipping them.
 */
import { existsSync } from "node:fs";
import { chromium, type Browser } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const haveBrowser = existsSync(CHROMIUM);
if (!haveBrowser && process.env.CI === "true") {
  throw new Error(`browser tests need Chromium at ${CHROMIUM}; install it with: apt-get install -y chromium`);
}

/** A headless Chromium; `args` adds flags (a host-resolver rule, say). */
export function launchChromium(args: string[] = []): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      ...args,
    ],
  });
}

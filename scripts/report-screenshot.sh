#!/usr/bin/env bash
# Open a report in headless Chromium and save a screenshot, printing what loaded
# (images, table headers). Chromium comes from the npm registry (@sparticuz/chromium
# ships a compressed build in its package; puppeteer-core drives it), installed once
# under ${LDC_VAE_CACHE:-~/.cache/ldc-vae}/chromium-npm.
# Usage: scripts/report-screenshot.sh REPORT.html OUT.png [HEIGHT] [#anchor]
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 REPORT.html OUT.png [HEIGHT] [#anchor]" >&2; exit 2; }
html="$(realpath "$1")"; out="$(realpath -m "$2")"; height="${3:-1200}"; anchor="${4:-}"
[ -f "$html" ] || { echo "$1: no such report" >&2; exit 1; }
dir="${LDC_VAE_CACHE:-$HOME/.cache/ldc-vae}/chromium-npm"
if [ ! -d "$dir/node_modules/puppeteer-core" ]; then
  mkdir -p "$dir"
  (cd "$dir" && npm install --silent --no-audit --no-fund @sparticuz/chromium@131 puppeteer-core@23)
fi
cat > "$dir/shot.mjs" <<'JS'
import chromium from '@sparticuz/chromium';
import puppeteer from 'puppeteer-core';
const [url, out, h] = process.argv.slice(2);
const browser = await puppeteer.launch({ args: chromium.args, executablePath: await chromium.executablePath(),
  headless: 'shell', protocolTimeout: 300000 });
const page = await browser.newPage();
await page.setViewport({ width: 1600, height: Number(h) });
await page.goto(url, { waitUntil: 'load', timeout: 300000 });
const info = await page.evaluate(() => ({
  images: document.images.length,
  loaded: [...document.images].filter(i => i.complete && i.naturalWidth > 0).length,
  columns: [...document.querySelectorAll('table:first-of-type tr:first-child th')].map(t => t.textContent),
  runs: document.querySelectorAll('h2[id^="run-"]').length }));
console.log(JSON.stringify(info));
await page.screenshot({ path: out });
await browser.close();
JS
node "$dir/shot.mjs" "file://$html$anchor" "$out" "$height"
echo "wrote $out"

// Drive OHIF in Debian's headless Chromium with playwright-core (no browser download).
//
//   node ohif_probe.mjs --base http://127.0.0.1:PORT --study UID --patient "Viewer, Test"
//                       --screenshot out.png [--timeout 90]
//
// Opens the study list (/viewer/), waits for the patient, opens /viewer/viewer?StudyInstanceUIDs=UID,
// waits for `canvas.cornerstone-canvas` to show a non-blank image, saves a screenshot, and prints
// one JSON line `RESULT {...}` (steps, pixel statistics, failed DICOMweb requests, console errors).
// Every wait is bounded; a watchdog ends the process whatever happens.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function args(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) out[argv[i].replace(/^--/, '')] = argv[i + 1];
  return out;
}

const opt = args(process.argv.slice(2));
const timeoutMs = Number(opt.timeout || 90) * 1000;
const chromiumPath = opt.chromium || '/usr/bin/chromium';
const result = {
  ok: false, steps: {}, failed: [], aborted: [], dicomwebRequests: 0, consoleErrors: [], pixels: null,
};
const t0 = Date.now();
const mark = (name) => { result.steps[name] = (Date.now() - t0) / 1000; };
const emit = () => process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);

const watchdog = setTimeout(() => {
  result.error = `watchdog: probe exceeded ${(timeoutMs * 2.5) / 1000}s`;
  emit();
  process.exit(3);
}, timeoutMs * 2.5);

const profile = mkdtempSync(join(tmpdir(), 'ohif-probe-'));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    viewport: { width: 1400, height: 900 },
    timeout: timeoutMs,
    args: [
      '--no-sandbox', '--disable-gpu', '--use-angle=swiftshader', '--enable-unsafe-swiftshader',
      '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
    ],
  });
  mark('launched');
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(timeoutMs);
  const isDicomweb = (url) => new URL(url).pathname.startsWith('/dicomweb');
  page.on('request', (req) => { if (isDicomweb(req.url())) result.dicomwebRequests += 1; });
  page.on('response', (resp) => {
    if (resp.status() >= 400 && isDicomweb(resp.url())) {
      result.failed.push({ url: resp.url(), status: resp.status(), method: resp.request().method() });
    }
  });
  page.on('requestfailed', (req) => {
    if (!isDicomweb(req.url())) return;
    const error = req.failure()?.errorText || 'failed';
    // Cancelled by the page itself (navigation, cornerstone's request pool): not a server failure.
    (error === 'net::ERR_ABORTED' ? result.aborted : result.failed).push({ url: req.url(), error });
  });
  page.on('console', (msg) => {
    if (msg.type() === 'error' && result.consoleErrors.length < 30) result.consoleErrors.push(msg.text().slice(0, 400));
  });
  page.on('pageerror', (err) => {
    if (result.consoleErrors.length < 30) result.consoleErrors.push(`pageerror: ${String(err).slice(0, 400)}`);
  });

  // 1. Study list.
  await page.goto(`${opt.base}/viewer/`, { waitUntil: 'domcontentloaded', timeout: timeoutMs });
  await page.getByText(opt.patient, { exact: false }).first().waitFor({ state: 'visible', timeout: timeoutMs });
  mark('studyList');
  result.studyListShowsPatient = true;
  await page.waitForLoadState('networkidle', { timeout: 15000 }).catch(() => {});

  // 2. Viewer.
  await page.goto(`${opt.base}/viewer/viewer?StudyInstanceUIDs=${encodeURIComponent(opt.study)}`,
    { waitUntil: 'domcontentloaded', timeout: timeoutMs });
  const canvas = page.locator('canvas.cornerstone-canvas').first();
  await canvas.waitFor({ state: 'attached', timeout: timeoutMs });
  mark('canvas');

  // 3. Non-blank: poll the canvas pixels until enough of them are not black.
  const stats = async () => page.evaluate(() => {
    const c = document.querySelector('canvas.cornerstone-canvas');
    if (!c || !c.width || !c.height) return null;
    const tmp = document.createElement('canvas');
    tmp.width = c.width; tmp.height = c.height;
    const ctx = tmp.getContext('2d');
    ctx.drawImage(c, 0, 0);
    const data = ctx.getImageData(0, 0, tmp.width, tmp.height).data;
    let nonBlack = 0; const colours = new Set();
    for (let i = 0; i < data.length; i += 4) {
      const r = data[i], g = data[i + 1], b = data[i + 2];
      if (r + g + b > 30) nonBlack += 1;
      colours.add((r >> 3) << 10 | (g >> 3) << 5 | (b >> 3));
    }
    const n = data.length / 4;
    return { width: c.width, height: c.height, nonBlackFraction: nonBlack / n, distinctColours: colours.size };
  });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    result.pixels = await stats().catch((e) => ({ error: String(e) }));
    if (result.pixels && result.pixels.nonBlackFraction > 0.05 && result.pixels.distinctColours > 8) break;
    if (Date.now() > deadline) throw new Error(`canvas still blank after ${timeoutMs / 1000}s`);
    await page.waitForTimeout(250);
  }
  mark('rendered');
  await page.waitForLoadState('networkidle', { timeout: 15000 }).catch(() => {});
  await page.waitForTimeout(500);
  result.pixels = await stats();
  if (opt.screenshot) {
    await page.screenshot({ path: opt.screenshot, timeout: timeoutMs });
    result.screenshot = opt.screenshot;
  }
  mark('done');
  result.ok = true;
} catch (err) {
  result.error = String(err && err.stack ? err.stack : err).slice(0, 3000);
  try {
    const page = context && context.pages()[0];
    if (page && opt.screenshot) {
      await page.screenshot({ path: opt.screenshot, timeout: 10000 });
      result.screenshot = opt.screenshot;
    }
  } catch { /* best effort */ }
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  clearTimeout(watchdog);
  emit();
}
process.exit(result.ok ? 0 : 1);

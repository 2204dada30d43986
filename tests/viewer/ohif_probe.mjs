// Drive OHIF in Debian's headless Chromium with playwright-core (no browser download).
//
//   node ohif_probe.mjs --base http://127.0.0.1:PORT --studies studies.json --out DIR
//                       [--timeout 90] [--chromium /usr/bin/chromium]
//
// studies.json: {"listed": N, "patients": ["Viewer, Test", ...],
//                "studies": [{"name": "ct", "uid": "1.2...", "image": true}, ...]}
//
// 1. Opens the study list (/viewer/) and waits until it shows `listed` studies ("1-N of N") and
//    every name of `patients`, or an error ("Data Source Connection Error" and the like).
// 2. Opens /viewer/viewer?StudyInstanceUIDs=UID for every study, one page load each, and polls the
//    first viewport until it is drawn: for an `image` study, the viewport canvas has enough
//    non-black pixels with enough variance, its overlay does not say "n/0" (a stack that never
//    loaded) and it shows no warning/error icon. A screenshot of each goes to DIR/<name>.png.
// Prints one JSON line `RESULT {...}`: the list's state, per study the pixel statistics, the
// overlay text, the icons seen, DICOMweb requests that failed, page errors. Every wait is bounded;
// a watchdog ends the process whatever happens.
import { chromium } from 'playwright-core';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
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
const plan = JSON.parse(readFileSync(opt.studies, 'utf-8'));
const result = { ok: false, steps: {}, list: null, studies: [], failed: [], aborted: [], consoleErrors: [] };
const t0 = Date.now();
const mark = (name) => { result.steps[name] = (Date.now() - t0) / 1000; };
const emit = () => process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
// What OHIF shows when the data source fails (the study list, or a viewer that cannot load a study).
const ERROR_TEXT = /Data Source Connection Error|Cannot read properties|Something went wrong|Error loading/i;
// Thresholds of "drawn": share of non-black pixels and the luminance's standard deviation (0-255).
const MIN_NON_BLACK = 0.02;
const MIN_STDDEV = 4;
const STATE_ARGS = { minNonBlack: MIN_NON_BLACK, minStddev: MIN_STDDEV, errorText: ERROR_TEXT.source };

const budget = timeoutMs * (2 + plan.studies.length);
const watchdog = setTimeout(() => {
  result.error = `watchdog: probe exceeded ${budget / 1000}s`;
  emit();
  process.exit(3);
}, budget);

// Runs in the page: the state of the first viewport (canvas statistics, overlay text, icons).
function viewportState({ minNonBlack, minStddev, errorText }) {
  const ERROR = new RegExp(errorText, 'i');
  const pane = document.querySelector('[data-cy="viewport-pane"]');
  const canvas = (pane || document).querySelector('canvas.cornerstone-canvas');
  const state = { hasViewport: !!pane, hasCanvas: !!canvas, pixels: null, overlay: '', icons: [] };
  if (pane) {
    state.overlay = (pane.innerText || '').replace(/\s+/g, ' ').trim().slice(0, 400);
    // Warning/error markers anywhere in the viewport pane: OHIF's status icons are SVGs whose
    // group has the id "status-warning" / "status-error" / "status-alert", or named by data-cy,
    // aria-label or title. (The study browser's thumbnails are outside the pane: their warning is
    // OHIF's list of display-set messages, e.g. "not reconstructable" for any single image.)
    for (const el of pane.querySelectorAll('svg, [id], [data-cy], [aria-label], [title]')) {
      const names = [el.getAttribute('id'), el.getAttribute('data-cy'), el.getAttribute('aria-label'),
        el.getAttribute('title'), el.getAttribute('name')].filter(Boolean).join(' ');
      if (/warn|alert|error/i.test(names)) state.icons.push(names.slice(0, 120));
    }
  }
  if (canvas && canvas.width && canvas.height) {
    const tmp = document.createElement('canvas');
    tmp.width = canvas.width; tmp.height = canvas.height;
    const ctx = tmp.getContext('2d');
    ctx.drawImage(canvas, 0, 0);
    const data = ctx.getImageData(0, 0, tmp.width, tmp.height).data;
    let nonBlack = 0; let sum = 0; let sum2 = 0;
    const n = data.length / 4;
    for (let i = 0; i < data.length; i += 4) {
      const y = 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
      if (y > 10) nonBlack += 1;
      sum += y; sum2 += y * y;
    }
    const mean = sum / n;
    state.pixels = { width: canvas.width, height: canvas.height, nonBlackFraction: nonBlack / n,
      stddev: Math.sqrt(Math.max(0, sum2 / n - mean * mean)) };
  }
  state.drawn = !!state.pixels && state.pixels.nonBlackFraction > minNonBlack && state.pixels.stddev > minStddev;
  state.emptyStack = /(^|\s|\()\d+\/0(\)|\s|$)/.test(state.overlay);
  state.errorText = ((document.body.innerText || '').match(ERROR) || [''])[0];
  return state;
}

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
  let current = 'list';
  const isDicomweb = (url) => new URL(url).pathname.startsWith('/dicomweb');
  page.on('response', (resp) => {
    if (resp.status() >= 400 && isDicomweb(resp.url())) {
      result.failed.push({ at: current, url: resp.url(), status: resp.status() });
    }
  });
  page.on('requestfailed', (req) => {
    if (!isDicomweb(req.url())) return;
    const error = req.failure()?.errorText || 'failed';
    // Cancelled by the page itself (navigation, cornerstone's request pool): not a server failure.
    (error === 'net::ERR_ABORTED' ? result.aborted : result.failed).push({ at: current, url: req.url(), error });
  });
  page.on('console', (msg) => {
    if (msg.type() === 'error' && result.consoleErrors.length < 40) {
      result.consoleErrors.push(`${current}: ${msg.text().slice(0, 300)}`);
    }
  });
  page.on('pageerror', (err) => {
    if (result.consoleErrors.length < 40) result.consoleErrors.push(`${current}: pageerror: ${String(err).slice(0, 300)}`);
  });

  // 1. The study list: every study counted, every patient shown, no error.
  await page.goto(`${opt.base}/viewer/`, { waitUntil: 'domcontentloaded', timeout: timeoutMs });
  const list = { ok: false, pager: '', missing: [], error: '' };
  const listDeadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await page.evaluate(() => document.body.innerText || '');
    const pager = text.match(/\d+-\d+ of (\d+)/);
    list.pager = pager ? pager[0] : '';
    list.missing = (plan.patients || []).filter((p) => !text.includes(p));
    const error = text.match(ERROR_TEXT);
    list.error = error ? text.slice(Math.max(0, error.index - 40), error.index + 200) : '';
    list.ok = !list.error && !!pager && Number(pager[1]) === plan.listed && list.missing.length === 0;
    if (list.ok || list.error || Date.now() > listDeadline) break;
    await page.waitForTimeout(250);
  }
  result.list = list;
  mark('studyList');
  if (opt.out) await page.screenshot({ path: join(opt.out, 'study-list.png'), timeout: timeoutMs });

  // 2. Each study in the viewer.
  for (const study of plan.studies) {
    current = study.name;
    const entry = { name: study.name, uid: study.uid, ok: false };
    result.studies.push(entry);
    const started = Date.now();
    try {
      await page.goto(`${opt.base}/viewer/viewer?StudyInstanceUIDs=${encodeURIComponent(study.uid)}`,
        { waitUntil: 'domcontentloaded', timeout: timeoutMs });
      const deadline = Date.now() + timeoutMs;
      let state;
      for (;;) {
        state = await page.evaluate(viewportState, STATE_ARGS)
          .catch((e) => ({ error: String(e) }));
        const good = state.hasViewport && !state.errorText && !state.emptyStack && state.icons?.length === 0
          && (!study.image || state.drawn);
        if (good || Date.now() > deadline) break;
        await page.waitForTimeout(250);
      }
      // Let late loads settle, then look again: the final state is the one judged.
      await page.waitForLoadState('networkidle', { timeout: 10000 }).catch(() => {});
      await page.waitForTimeout(300);
      state = await page.evaluate(viewportState, STATE_ARGS);
      Object.assign(entry, state);
      entry.ok = state.hasViewport && !state.errorText && !state.emptyStack && state.icons.length === 0
        && (!study.image || state.drawn);
    } catch (err) {
      entry.error = String(err && err.stack ? err.stack : err).slice(0, 1500);
    }
    entry.seconds = (Date.now() - started) / 1000;
    if (opt.out) {
      entry.screenshot = join(opt.out, `${study.name}.png`);
      await page.screenshot({ path: entry.screenshot, timeout: timeoutMs }).catch(() => {});
    }
    mark(study.name);
  }
  result.ok = result.list.ok && result.studies.every((s) => s.ok);
} catch (err) {
  result.error = String(err && err.stack ? err.stack : err).slice(0, 3000);
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  clearTimeout(watchdog);
  emit();
}
process.exit(result.ok ? 0 : 1);

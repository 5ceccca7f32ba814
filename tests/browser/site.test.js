#!/usr/bin/env node
/*
 * README: headless-Chromium test of the website and its live-metrics card. Run it with
 *   (cd tests/browser && npm ci) && apt-get install -y chromium     # once
 *   BEAVA_BIN=build/beava BEAVA_SITE_DIR=site node tests/browser/site.test.js
 * It starts beava itself (loopback, port 0, --memory-only, a temp YAML with `site:`),
 * registers the SiteMetrics pipeline, drives /usr/bin/chromium (CHROMIUM_BIN to override)
 * through playwright-core, and prints one line per check and a final "N passed, M failed".
 * Exit status 0 only when everything passed. Screenshots and the server logs go to
 * tests/out/ (git-ignored). Never downloads a browser.
 *
 * What it checks: static files and /api allow-list over HTTP; the card's "empty" state on
 * a fresh server; the card showing exactly what POST /get returns; three page views (each
 * left, so each beacons) raising page_views_24h by exactly three; SIGKILL of beava turning
 * the card "offline" within 5 s without inventing numbers; a restart on the same port plus
 * re-registration bringing it back; the card and the docs pages at 375 px without
 * horizontal scroll; no request leaving the server's origin; no uncaught page error.
 */
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const REPO = path.resolve(__dirname, '..', '..');
const OUT_DIR = path.join(REPO, 'tests', 'out');
const BEAVA_BIN = process.env.BEAVA_BIN ? path.resolve(process.env.BEAVA_BIN) : '';
const SITE_DIR = path.resolve(process.env.BEAVA_SITE_DIR || path.join(REPO, 'site'));
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const TOTAL_TIMEOUT_MS = Number(process.env.BEAVA_BROWSER_TEST_TIMEOUT_MS || 240000);
const STEP_TIMEOUT_MS = 60000;
const OFFLINE_WITHIN_MS = 5000;

const REGISTER_BODY = {
  nodes: [
    {
      kind: 'event',
      name: 'PageView',
      schema: { fields: { session_id: 'str', path: 'str', dwell_ms: 'i64' }, optional_fields: [] }
    },
    {
      kind: 'derivation',
      name: 'SiteMetrics',
      output_kind: 'table',
      upstreams: ['PageView'],
      ops: [{
        op: 'group_by',
        keys: [],
        agg: {
          page_views_24h: { op: 'count', params: { window: '24h' } },
          median_dwell_1h: { op: 'quantile', params: { field: 'dwell_ms', q: 0.5, window: '1h' } },
          top_page_1h: { op: 'top_k', params: { field: 'path', k: 1, window: '1h' } }
        }
      }],
      table_primary_key: []
    }
  ]
};

/* ---- process and temp-dir bookkeeping: everything started is stopped, always ---------- */

const children = new Set();
const tempDirs = new Set();
let browserContext = null;
let cleanedUp = false;

function mkTemp(prefix) {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.add(d);
  return d;
}

function cleanupSync() {
  if (cleanedUp) return;
  cleanedUp = true;
  for (const c of children) {
    try { c.kill('SIGKILL'); } catch (e) { /* already gone */ }
  }
  children.clear();
  for (const d of tempDirs) {
    try { fs.rmSync(d, { recursive: true, force: true }); } catch (e) { /* best effort */ }
  }
  tempDirs.clear();
}

async function cleanup() {
  if (browserContext) {
    const ctx = browserContext;
    browserContext = null;
    await withTimeout(ctx.close(), 10000, 'closing chromium').catch(() => {});
  }
  for (const c of [...children]) await stopProcess(c, 'SIGKILL');
  cleanupSync();
}

process.on('exit', cleanupSync);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    console.log(`interrupted by ${sig}`);
    cleanup().finally(() => process.exit(130));
  });
}

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

function withTimeout(promise, ms, what) {
  let t;
  const timeout = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(t));
}

async function waitFor(fn, timeoutMs, what, intervalMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) { last = e; }
    if (Date.now() > deadline) {
      const detail = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`${what}: not within ${timeoutMs} ms (last: ${detail})`);
    }
    await sleep(intervalMs);
  }
}

function assert(cond, msg) { if (!cond) throw new Error(msg); }
function assertEq(got, want, msg) {
  if (got !== want) throw new Error(`${msg}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}

/* ---- beava ---------------------------------------------------------------------------- */

let serverRuns = 0;
const workDir = () => { if (!workDir.d) workDir.d = mkTemp('beava-browser-'); return workDir.d; };

function writeConfig() {
  const cfg = path.join(workDir(), 'beava.yaml');
  /* JSON strings are valid YAML double-quoted scalars: safe for any path. */
  fs.writeFileSync(cfg, [
    'site:',
    `  dir: ${JSON.stringify(SITE_DIR)}`,
    '  public_tables: [SiteMetrics]',
    '  public_events: [PageView]',
    ''
  ].join('\n'));
  return cfg;
}

/* Start beava; resolves {proc, port, base, log} once it logs server.http_bound. */
function startBeava(port) {
  const run = ++serverRuns;
  const cfg = writeConfig();
  const logPath = path.join(OUT_DIR, `beava-${run}.log`);
  const log = fs.createWriteStream(logPath);
  const env = Object.assign({}, process.env, {
    BEAVA_LISTEN_ADDR: `127.0.0.1:${port}`,
    BEAVA_TCP_HOST: '127.0.0.1',
    BEAVA_TCP_PORT: '0',
    BEAVA_ADMIN_ADDR: '127.0.0.1:0'
  });
  const proc = spawn(BEAVA_BIN, ['--config', cfg, '--memory-only'], {
    cwd: workDir(), env, stdio: ['ignore', 'pipe', 'pipe']
  });
  children.add(proc);
  proc.exited = new Promise((resolve) => proc.once('exit', (code, sig) => {
    children.delete(proc);
    log.write(`\n[test] beava exited code=${code} signal=${sig}\n`);
    resolve({ code, sig });
  }));
  proc.stderr.on('data', (b) => log.write(b));
  const tail = [];
  return withTimeout(new Promise((resolve, reject) => {
    proc.once('error', (e) => reject(new Error(`cannot start ${BEAVA_BIN}: ${e.message}`)));
    proc.exited.then(({ code, sig }) => reject(new Error(
      `beava exited (code ${code}, signal ${sig}) before binding; see ${logPath}; ` +
      `last output: ${tail.join(' | ')}`)));
    readline.createInterface({ input: proc.stdout }).on('line', (line) => {
      log.write(line + '\n');
      tail.push(line.slice(0, 200));
      if (tail.length > 5) tail.shift();
      let j;
      try { j = JSON.parse(line); } catch (e) { return; }
      if (j && j.kind === 'server.http_bound' && typeof j.addr === 'string') {
        const p = Number(j.addr.slice(j.addr.lastIndexOf(':') + 1));
        resolve({ proc, port: p, base: `http://127.0.0.1:${p}`, log: logPath });
      }
    });
  }), 20000, 'beava to log server.http_bound').catch(async (e) => {
    await stopProcess(proc, 'SIGKILL');
    throw e;
  });
}

async function stopProcess(proc, signal) {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  try { proc.kill(signal); } catch (e) { return; }
  await withTimeout(proc.exited || new Promise((r) => proc.once('exit', r)), 10000, 'process exit')
    .catch(() => { try { proc.kill('SIGKILL'); } catch (e) { /* gone */ } });
}

/* ---- HTTP helpers ----------------------------------------------------------------------- */

async function request(base, method, urlPath, body, headers) {
  const init = { method, headers: Object.assign({}, headers || {}), signal: AbortSignal.timeout(5000) };
  if (body !== undefined) {
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
    if (!init.headers['Content-Type']) init.headers['Content-Type'] = 'application/json';
  }
  const res = await fetch(base + urlPath, init);
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch (e) { json = undefined; }
  return { status: res.status, headers: res.headers, text, json };
}

async function getRow(base) {
  const r = await request(base, 'POST', '/get', { table: 'SiteMetrics', key: '' });
  assertEq(r.status, 200, `POST /get SiteMetrics status (body ${r.text})`);
  return r.json;
}

async function register(base) {
  const r = await request(base, 'POST', '/register', REGISTER_BODY);
  assertEq(r.status, 200, `POST /register status (body ${r.text})`);
  return r.json;
}

async function pushView(base, pagePath, dwell, sid) {
  const r = await request(base, 'POST', '/push',
    { event: 'PageView', data: { session_id: sid || 's_test', path: pagePath, dwell_ms: dwell } });
  assertEq(r.status, 200, `POST /push status (body ${r.text})`);
}

/* A raw request, so the path reaches the server byte for byte (fetch would normalise it). */
function rawGet(port, target) {
  return withTimeout(new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let data = '';
    sock.setEncoding('latin1');
    sock.on('connect', () => sock.write(
      `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`));
    sock.on('data', (d) => { data += d; });
    sock.on('end', () => resolve(data));
    sock.on('close', () => resolve(data));
    sock.on('error', reject);
  }), 5000, `raw GET ${target}`);
}

/* ---- the card, as the page shows it ------------------------------------------------------ */

function readCard(page) {
  return page.evaluate(() => {
    const q = (id) => document.getElementById(id);
    const metric = (id) => ({ text: q(id).textContent.trim(), value: q(id).getAttribute('data-value') });
    const status = q('card-status');
    return {
      state: status.getAttribute('data-state'),
      reason: status.getAttribute('data-reason'),
      status: status.textContent.trim(),
      metricsHidden: q('card-metrics').hidden,
      stale: q('card-metrics').getAttribute('data-stale') === 'true',
      emptyVisible: !q('card-empty').hidden,
      emptyText: q('card-empty').textContent.trim(),
      updated: q('card-updated').textContent.trim(),
      views: metric('metric-page-views'),
      dwell: metric('metric-median-dwell'),
      top: metric('metric-top-page'),
      cardText: q('live-card').innerText
    };
  });
}

async function waitCard(page, pred, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const c = await readCard(page);
    if (pred(c)) return c;
    if (Date.now() > deadline) {
      throw new Error(`${what}: not within ${timeoutMs} ms (card: state=${c.state} ` +
        `status="${c.status}" views=${c.views.value} dwell=${c.dwell.value} top=${c.top.value})`);
    }
    await sleep(100);
  }
}

/* The card must show exactly the row /get returns (raw values in data-value). */
function cardMatchesRow(c, row) {
  if (c.state !== 'live' || c.metricsHidden || c.stale) return false;
  if (c.views.value !== String(row.page_views_24h)) return false;
  const dwell = row.median_dwell_1h === null || row.median_dwell_1h === undefined ? '' : String(row.median_dwell_1h);
  if (c.dwell.value !== dwell) return false;
  const top = row.top_page_1h && row.top_page_1h.length ? String(row.top_page_1h[0].value) : '';
  return c.top.value === top;
}

/* ---- runner ------------------------------------------------------------------------------ */

const results = [];
let aborted = null;

async function step(name, fn, opts) {
  const fatal = opts && opts.fatal;
  if (aborted) {
    results.push({ name, ok: false });
    console.log(`not run  ${name} (after: ${aborted})`);
    return;
  }
  const t0 = Date.now();
  try {
    await withTimeout(Promise.resolve().then(fn), STEP_TIMEOUT_MS, name);
    results.push({ name, ok: true });
    console.log(`ok       ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    results.push({ name, ok: false });
    console.log(`FAIL     ${name}: ${e && e.message ? e.message : e}`);
    if (fatal) aborted = name;
  }
}

async function main() {
  fs.mkdirSync(OUT_DIR, { recursive: true });
  let chromium;
  let server = null;
  let cardPage = null;
  const requests = [];
  const pageErrors = [];

  await step('environment: BEAVA_BIN, site dir, chromium, playwright-core', () => {
    assert(BEAVA_BIN, 'set BEAVA_BIN to the beava binary');
    fs.accessSync(BEAVA_BIN, fs.constants.X_OK);
    assert(fs.existsSync(path.join(SITE_DIR, 'index.html')), `no index.html in ${SITE_DIR}`);
    fs.accessSync(CHROMIUM, fs.constants.X_OK);
    try {
      chromium = require('playwright-core').chromium;
    } catch (e) {
      throw new Error('playwright-core missing: run `npm ci` in tests/browser');
    }
  }, { fatal: true });

  await step('beava starts on loopback port 0 and logs server.http_bound', async () => {
    server = await startBeava(0);
    assert(server.port > 0, 'bound port');
  }, { fatal: true });

  await step('static files: /, style.css, app.js with types, ETag and 304', async () => {
    const home = await request(server.base, 'GET', '/');
    assertEq(home.status, 200, 'GET / status');
    assert(/^text\/html/.test(home.headers.get('content-type') || ''), 'GET / is text/html');
    assert(home.text.includes('id="live-card"'), 'GET / is the landing page');
    assertEq(home.headers.get('cache-control'), 'no-cache', 'html Cache-Control');
    const css = await request(server.base, 'GET', '/style.css');
    assertEq(css.status, 200, 'GET /style.css status');
    assert(/^text\/css/.test(css.headers.get('content-type') || ''), 'style.css is text/css');
    const etag = css.headers.get('etag');
    assert(etag && /^"[^"]+"$/.test(etag), `strong ETag on style.css (got ${etag})`);
    const again = await request(server.base, 'GET', '/style.css', undefined, { 'If-None-Match': etag });
    assertEq(again.status, 304, 'If-None-Match with the same ETag');
    const js = await request(server.base, 'GET', '/app.js');
    assertEq(js.status, 200, 'GET /app.js status');
    assert(/javascript/.test(js.headers.get('content-type') || ''), 'app.js is javascript');
    for (const p of ['/quickstart.html', '/api.html']) {
      assertEq((await request(server.base, 'GET', p)).status, 200, `GET ${p}`);
    }
    assertEq((await request(server.base, 'GET', '/no-such-page.html')).status, 404, 'missing file');
  });

  await step('static files: traversal attempts never leave the site dir', async () => {
    for (const t of ['/../../../../etc/passwd', '/%2e%2e/%2e%2e/%2e%2e/etc/passwd',
      '/%2e%2e%2f%2e%2e%2fetc%2fpasswd', '//etc/passwd', '/..%5c..%5cetc%5cpasswd',
      '/index.html%00.txt']) {
      const res = await rawGet(server.port, t);
      const status = Number((/^HTTP\/1\.[01] (\d{3})/.exec(res) || [])[1]);
      assert(status === 400 || status === 404, `${t}: status ${status}, want 400 or 404`);
      assert(!res.includes('root:'), `${t}: leaked /etc/passwd`);
    }
  });

  await step('register the SiteMetrics pipeline', async () => {
    const r = await register(server.base);
    assertEq(r.status, 'ok', 'register status field');
  }, { fatal: true });

  await step('/api aliases: allow-listed only, everything else 404', async () => {
    const ok = await request(server.base, 'POST', '/api/get', { table: 'SiteMetrics', key: '' });
    assertEq(ok.status, 200, 'POST /api/get SiteMetrics');
    assertEq(JSON.stringify(ok.json), '{}', 'fresh SiteMetrics row');
    const notListed = await request(server.base, 'POST', '/api/get', { table: 'PageView', key: '' });
    assertEq(notListed.status, 404, 'POST /api/get for a table not in public_tables');
    const ev = await request(server.base, 'POST', '/api/push/NotListed', { a: 1 });
    assertEq(ev.status, 404, 'POST /api/push/<event not in public_events>');
    for (const p of ['/api/register', '/api/reset', '/api/registry', '/api/push-sync/PageView']) {
      assertEq((await request(server.base, 'POST', p, {})).status, 404, `POST ${p}`);
    }
    assertEq(JSON.stringify(await getRow(server.base)), '{}', 'alias rejections pushed nothing');
  });

  await step('chromium starts (playwright-core, fresh profile)', async () => {
    const profile = mkTemp('beava-chromium-');
    browserContext = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1100, height: 900 },
      timeout: 30000
    });
    browserContext.on('request', (req) => requests.push(req.url()));
    browserContext.on('page', (p) => p.on('pageerror', (e) => pageErrors.push(String(e))));
    cardPage = browserContext.pages()[0] || await browserContext.newPage();
    cardPage.on('pageerror', (e) => pageErrors.push(String(e)));
  }, { fatal: true });

  await step('card on a fresh server says "no page views yet" (no zeros)', async () => {
    await cardPage.goto(server.base + '/', { waitUntil: 'load', timeout: 15000 });
    const c = await waitCard(cardPage, (c) => c.state === 'empty', 5000, 'card state empty');
    assert(/no page views yet/i.test(c.status), `status text: ${c.status}`);
    assert(c.metricsHidden, 'metrics hidden while the row is {}');
    assert(c.emptyVisible, 'the "no page views yet" note is visible');
    assert(!/\b0\b/.test(c.cardText.replace(/\d\d:\d\d:\d\d/g, '')), `no zero shown: ${c.cardText}`);
    assert(/^updated \d\d:\d\d:\d\d$/.test(c.updated), `updated time: ${c.updated}`);
  });

  await step('card shows what POST /get returns', async () => {
    await pushView(server.base, '/', 1000);
    await pushView(server.base, '/docs', 1200);
    await pushView(server.base, '/docs', 5000);
    const row = await getRow(server.base);
    assertEq(row.page_views_24h, 3, 'page_views_24h after three pushes');
    const c = await waitCard(cardPage, (c) => cardMatchesRow(c, row), 5000, 'card == /get row');
    assertEq(c.views.text, '3', 'page views text');
    assertEq(c.dwell.text, '1.2 s', 'median dwell of 1000/1200/5000 ms');
    assertEq(c.top.text, '/docs', 'top page text');
    assert(/^live/.test(c.status), `status: ${c.status}`);
    assert(/^updated \d\d:\d\d:\d\d$/.test(c.updated), `updated: ${c.updated}`);
    await cardPage.screenshot({ path: path.join(OUT_DIR, 'card-live.png'), fullPage: true });
  });

  await step('opening three pages (each left, so each beacons) adds exactly three views', async () => {
    const before = (await getRow(server.base)).page_views_24h;
    const visitor = await browserContext.newPage();
    /* sendBeacon requests do not show up as Playwright requests, so this page (only this
     * one) records what it hands to sendBeacon in localStorage, then calls the real one. */
    await visitor.addInitScript(() => {
      const RealBlob = window.Blob;
      window.Blob = class extends RealBlob {
        constructor(parts, opts) { super(parts, opts); this.bvParts = parts; }
      };
      const real = navigator.sendBeacon.bind(navigator);
      navigator.sendBeacon = (url, data) => {
        try {
          const seen = JSON.parse(localStorage.getItem('bv_test_beacons') || '[]');
          seen.push({ url: String(url), body: data && data.bvParts ? data.bvParts.join('') : null });
          localStorage.setItem('bv_test_beacons', JSON.stringify(seen));
        } catch (e) { /* recording is best effort */ }
        return real(url, data);
      };
    });
    for (const p of ['/quickstart.html', '/api.html', '/']) {
      await visitor.goto(server.base + p, { waitUntil: 'load', timeout: 15000 });
      await sleep(300); /* some dwell time */
    }
    await visitor.goto('about:blank'); /* leaving the third page fires its beacon */
    const want = before + 3;
    await waitFor(async () => (await getRow(server.base)).page_views_24h >= want, 10000,
      `page_views_24h to reach ${want}`);
    await sleep(2000); /* nothing else may arrive: one beacon per page view */
    const row = await getRow(server.base);
    assertEq(row.page_views_24h, want, 'page_views_24h after three page views');
    await waitCard(cardPage, (c) => cardMatchesRow(c, row), 5000, 'card shows the new count');
    /* What was handed to sendBeacon: three bare PageView objects, one session per tab. */
    const seen = JSON.parse(await cardPage.evaluate(() => localStorage.getItem('bv_test_beacons') || '[]'));
    assertEq(JSON.stringify(seen.map((b) => b.url)),
      JSON.stringify(['/api/push/PageView', '/api/push/PageView', '/api/push/PageView']), 'beacon URLs');
    const bodies = seen.map((b) => JSON.parse(b.body));
    assertEq(JSON.stringify(bodies.map((b) => b.path)),
      JSON.stringify(['/quickstart.html', '/api.html', '/']), 'beacon paths');
    for (const b of bodies) {
      assertEq(JSON.stringify(Object.keys(b).sort()), '["dwell_ms","path","session_id"]', 'beacon keys');
      assert(Number.isInteger(b.dwell_ms) && b.dwell_ms >= 200, `dwell_ms ${b.dwell_ms}`);
      assert(typeof b.session_id === 'string' && b.session_id.length >= 16, 'session_id');
    }
    assertEq(new Set(bodies.map((b) => b.session_id)).size, 1, 'one session id per tab');
    await visitor.close();
  });

  await step('killing beava turns the card offline within 5 s, with no invented numbers', async () => {
    const before = await readCard(cardPage);
    const t0 = Date.now();
    await stopProcess(server.proc, 'SIGKILL');
    const c = await waitCard(cardPage, (c) => c.state === 'offline', OFFLINE_WITHIN_MS,
      'card state offline');
    console.log(`         (offline shown ${Date.now() - t0} ms after SIGKILL)`);
    assert(/^offline — server unreachable since \d\d:\d\d:\d\d$/.test(c.status), `status: ${c.status}`);
    assertEq(c.reason, 'unreachable', 'data-reason');
    /* The last good numbers may stay, but only marked stale, and unchanged. */
    if (!c.metricsHidden) {
      assert(c.stale, 'numbers kept while offline are marked stale');
      assertEq(c.views.value, before.views.value, 'stale page views unchanged');
      assertEq(c.dwell.value, before.dwell.value, 'stale dwell unchanged');
      assertEq(c.top.value, before.top.value, 'stale top page unchanged');
      assert(/stale/i.test(c.updated), `foot says stale: ${c.updated}`);
    }
    await cardPage.screenshot({ path: path.join(OUT_DIR, 'card-offline.png'), fullPage: true });
    await sleep(3200); /* two more failed polls: still offline, same "since" */
    const later = await readCard(cardPage);
    assertEq(later.state, 'offline', 'still offline');
    assertEq(later.status, c.status, '"since" keeps the start of the outage');
  });

  await step('restart on the same port + re-register brings the card back', async () => {
    const port = server.port;
    /* The old socket may linger briefly; retry the bind for a few seconds. */
    server = await waitFor(async () => {
      try { return await startBeava(port); } catch (e) { if (/before binding/.test(e.message)) return null; throw e; }
    }, 10000, `beava to bind 127.0.0.1:${port} again`, 500);
    assertEq(server.port, port, 'same port');
    /* Up but not registered: SiteMetrics is 404 unknown_table, which is not "live". */
    const c0 = await waitCard(cardPage, (c) => c.state === 'offline' && c.reason === 'http', 5000,
      'card reports the HTTP error while SiteMetrics is not registered');
    assert(/^offline — server answered HTTP 404/.test(c0.status), `status: ${c0.status}`);
    await register(server.base);
    const c1 = await waitCard(cardPage, (c) => c.state === 'empty', 5000, 'card empty after re-register');
    assert(!c1.stale && c1.metricsHidden, 'old numbers are gone, not shown as current');
    await pushView(server.base, '/', 800);
    await pushView(server.base, '/quickstart.html', 2400);
    const row = await getRow(server.base);
    assertEq(row.page_views_24h, 2, 'page_views_24h on the new server');
    const c2 = await waitCard(cardPage, (c) => cardMatchesRow(c, row), 5000, 'card == /get after restart');
    assertEq(c2.views.text, '2', 'page views text after restart');
    await cardPage.screenshot({ path: path.join(OUT_DIR, 'card-recovered.png'), fullPage: true });
  });

  await step('at 375 px the card is visible without horizontal scroll', async () => {
    const phone = await browserContext.newPage();
    await phone.setViewportSize({ width: 375, height: 812 });
    await phone.goto(server.base + '/', { waitUntil: 'load', timeout: 15000 });
    await waitCard(phone, (c) => c.state === 'live', 5000, 'phone card live');
    const m = await phone.evaluate(() => {
      const r = document.getElementById('live-card').getBoundingClientRect();
      return {
        scrollW: document.documentElement.scrollWidth,
        clientW: document.documentElement.clientWidth,
        bodyScrollW: document.body.scrollWidth,
        left: r.left, right: r.right, top: r.top, height: r.height
      };
    });
    assert(m.scrollW <= m.clientW, `page scrolls sideways: scrollWidth ${m.scrollW} > ${m.clientW}`);
    assert(m.bodyScrollW <= m.clientW, `body scrolls sideways: ${m.bodyScrollW} > ${m.clientW}`);
    assert(m.left >= 0 && m.right <= 375, `card spans ${m.left}..${m.right}`);
    assert(m.height > 0 && await phone.locator('#live-card').isVisible(), 'card visible');
    await phone.locator('#live-card').screenshot({ path: path.join(OUT_DIR, 'card-375.png') });
    for (const p of ['/quickstart.html', '/api.html']) {
      await phone.goto(server.base + p, { waitUntil: 'load', timeout: 15000 });
      const w = await phone.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]);
      assert(w[0] <= w[1], `${p} scrolls sideways at 375 px: ${w[0]} > ${w[1]}`);
    }
    await phone.screenshot({ path: path.join(OUT_DIR, 'api-375.png') });
    await phone.close();
  });

  await step('nothing is fetched from outside the server; no uncaught page errors', () => {
    const origins = new Set([server.base]);
    const foreign = requests.filter((u) => {
      if (/^(data|about|blob):/.test(u)) return false;
      try { return !origins.has(new URL(u).origin); } catch (e) { return true; }
    });
    assertEq(JSON.stringify(foreign), '[]', 'requests outside the server');
    assert(requests.length > 0, 'requests were observed');
    assertEq(JSON.stringify(pageErrors), '[]', 'uncaught page errors');
  });
}

async function run() {
  const watchdog = setTimeout(() => {
    console.log(`FAIL     whole run exceeded ${TOTAL_TIMEOUT_MS} ms`);
    results.push({ name: 'watchdog', ok: false });
    finish();
  }, TOTAL_TIMEOUT_MS);
  try {
    await main();
  } catch (e) {
    console.log(`FAIL     unexpected: ${e && e.stack ? e.stack : e}`);
    results.push({ name: 'unexpected', ok: false });
  }
  clearTimeout(watchdog);
  await finish();
}

let finishing = false;
async function finish() {
  if (finishing) return;
  finishing = true;
  await withTimeout(cleanup(), 20000, 'cleanup').catch((e) => console.log(`cleanup: ${e.message}`));
  const passed = results.filter((r) => r.ok).length;
  const failed = results.length - passed;
  console.log(`screenshots and server logs: ${OUT_DIR}`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 && passed > 0 ? 0 : 1);
}

run();

/*
 * app.js - the site's only script. Plain JS, no framework, nothing loaded from outside
 * this server. Two parts:
 *
 * 1. The page-view beacon (every page).
 *    RULE: exactly one PageView per page view, sent when the page is first hidden
 *    (visibilitychange -> hidden, or pagehide), carrying the real dwell time in ms
 *    (page shown -> page hidden). Nothing is sent on load, nothing when the page comes
 *    back, nothing more for a page that stays open a long time. A page restored from the
 *    back/forward cache is a new page view and gets its own beacon. So a page is counted
 *    once it has been left (another page opened in the same tab, tab switched or closed).
 *    Body: the bare event {session_id, path, dwell_ms} POSTed to /api/push/PageView
 *    (navigator.sendBeacon; fetch keepalive as fallback). session_id lives in
 *    sessionStorage (one per tab).
 *
 * 2. The live-metrics card (index.html only, #live-card). Every 1.5 s it POSTs
 *    {"table":"SiteMetrics","key":""} to /api/get and shows the row. States, in
 *    #card-status[data-state]:
 *      loading  before the first answer;
 *      live     a row with numbers;
 *      empty    the row is {} (no page views yet): said in words, never as zeros;
 *      offline  fetch failed, non-200, or a body that is not the expected row. Says
 *               since when; the last good numbers stay but are struck through and
 *               labelled stale (or are not shown at all if there never were any).
 *    It recovers by itself on the next good answer. No number on the card is ever
 *    invented: each one is a value the server returned.
 */
(function () {
  'use strict';

  var PUSH_URL = '/api/push/PageView';
  var GET_URL = '/api/get';
  var POLL_MS = 1500;
  var TIMEOUT_MS = 4000;

  /* ---- 1. page-view beacon --------------------------------------------------------- */

  function randomHex(bytes) {
    var out = '';
    var buf = new Uint8Array(bytes);
    if (window.crypto && crypto.getRandomValues) {
      crypto.getRandomValues(buf);
    } else {
      for (var i = 0; i < bytes; i++) buf[i] = Math.floor(Math.random() * 256);
    }
    for (var j = 0; j < buf.length; j++) out += (buf[j] < 16 ? '0' : '') + buf[j].toString(16);
    return out;
  }

  function newSessionId() {
    if (window.crypto && typeof crypto.randomUUID === 'function') {
      try { return crypto.randomUUID(); } catch (e) { /* not a secure context */ }
    }
    return randomHex(16);
  }

  var memorySid = null; /* used when sessionStorage is blocked */
  function sessionId() {
    try {
      var sid = sessionStorage.getItem('bv_sid');
      if (!sid) {
        sid = newSessionId();
        sessionStorage.setItem('bv_sid', sid);
      }
      return sid;
    } catch (e) {
      if (!memorySid) memorySid = newSessionId();
      return memorySid;
    }
  }

  var shownAt = performance.now();
  var sent = false;

  function sendPageView() {
    if (sent) return;
    sent = true;
    var body = JSON.stringify({
      session_id: sessionId(),
      path: location.pathname,
      dwell_ms: Math.max(0, Math.round(performance.now() - shownAt))
    });
    var queued = false;
    try {
      if (navigator.sendBeacon) {
        queued = navigator.sendBeacon(PUSH_URL, new Blob([body], { type: 'application/json' }));
      }
    } catch (e) { queued = false; }
    if (!queued && window.fetch) {
      try {
        fetch(PUSH_URL, {
          method: 'POST',
          body: body,
          keepalive: true,
          headers: { 'Content-Type': 'application/json' }
        }).catch(function () { /* the server is away: this view is lost, nothing to do */ });
      } catch (e) { /* keepalive quota exceeded: give up quietly */ }
    }
  }

  /* A prerendered page has not been seen yet: its view starts when it is shown. */
  if (document.prerendering) {
    document.addEventListener('prerenderingchange', function () { shownAt = performance.now(); },
      { once: true });
  }
  document.addEventListener('visibilitychange', function () {
    if (document.visibilityState === 'hidden') sendPageView();
  });
  window.addEventListener('pagehide', sendPageView);
  window.addEventListener('pageshow', function (ev) {
    if (ev.persisted) { /* back/forward cache restore: a new page view */
      shownAt = performance.now();
      sent = false;
    }
  });

  /* ---- 2. live-metrics card -------------------------------------------------------- */

  var card = document.getElementById('live-card');
  if (!card) return;

  var el = {
    status: document.getElementById('card-status'),
    metrics: document.getElementById('card-metrics'),
    empty: document.getElementById('card-empty'),
    updated: document.getElementById('card-updated'),
    views: document.getElementById('metric-page-views'),
    dwell: document.getElementById('metric-median-dwell'),
    dwellSub: document.getElementById('metric-median-dwell-sub'),
    top: document.getElementById('metric-top-page'),
    topSub: document.getElementById('metric-top-page-sub')
  };

  var lastGoodAt = null;    /* Date of the last good answer */
  var offlineSince = null;  /* Date of the first failure of the current outage */
  var haveNumbers = false;  /* are the metric elements showing server values? */
  var timer = null;
  var inFlight = false;

  function pad2(n) { return (n < 10 ? '0' : '') + n; }
  function hms(d) { return pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds()); }

  function formatCount(n) {
    return Math.round(n).toLocaleString('en-US');
  }

  /* 840 ms, 1.2 s, 4 min 05 s, 1.3 h */
  function formatDwell(ms) {
    if (ms < 1000) return Math.round(ms) + ' ms';
    if (ms < 59950) return (ms / 1000).toFixed(1) + ' s';
    var s = Math.round(ms / 1000);
    if (s < 3600) return Math.floor(s / 60) + ' min ' + pad2(s % 60) + ' s';
    return (ms / 3600000).toFixed(1) + ' h';
  }

  function isNum(v) { return typeof v === 'number' && isFinite(v); }

  /* The expected row, or null when the body is not it. {} is a valid, empty row. */
  function parseRow(row) {
    if (row === null || typeof row !== 'object' || Array.isArray(row)) return null;
    if (Object.keys(row).length === 0) return { empty: true };
    var views = row.page_views_24h;
    var dwell = row.median_dwell_1h;
    var top = row.top_page_1h;
    if (!isNum(views) || views < 0) return null;
    if (dwell !== null && dwell !== undefined && !isNum(dwell)) return null;
    if (top !== null && top !== undefined && !Array.isArray(top)) return null;
    var first = null;
    if (top && top.length > 0) {
      var e = top[0];
      if (e === null || typeof e !== 'object' || e.value === undefined || e.value === null) return null;
      first = { value: String(e.value), count: isNum(e.count) ? e.count : null };
    }
    return { empty: false, views: views, dwell: isNum(dwell) ? dwell : null, top: first };
  }

  function setStatus(state, text, reason) {
    el.status.setAttribute('data-state', state);
    if (reason) el.status.setAttribute('data-reason', reason);
    else el.status.removeAttribute('data-reason');
    el.status.textContent = text;
    card.setAttribute('data-state', state);
  }

  function setMetric(node, text, raw) {
    node.textContent = text;
    node.setAttribute('data-value', raw);
    node.title = text;
  }

  function showRow(r, now) {
    lastGoodAt = now;
    offlineSince = null;
    el.updated.textContent = 'updated ' + hms(now);
    if (r.empty) {
      haveNumbers = false;
      el.metrics.hidden = true;
      el.metrics.removeAttribute('data-stale');
      el.empty.hidden = false;
      setStatus('empty', 'no page views yet');
      return;
    }
    setMetric(el.views, formatCount(r.views), String(r.views));
    if (r.dwell === null) {
      setMetric(el.dwell, '\u2014', '');
      el.dwellSub.textContent = 'no visits in the last hour';
    } else {
      setMetric(el.dwell, formatDwell(r.dwell), String(r.dwell));
      el.dwellSub.textContent = '';
    }
    if (r.top === null) {
      setMetric(el.top, '\u2014', '');
      el.topSub.textContent = 'no visits in the last hour';
    } else {
      setMetric(el.top, r.top.value, r.top.value);
      el.topSub.textContent = r.top.count === null ? '' :
        formatCount(r.top.count) + (r.top.count === 1 ? ' view' : ' views');
    }
    haveNumbers = true;
    el.metrics.hidden = false;
    el.metrics.removeAttribute('data-stale');
    el.empty.hidden = true;
    setStatus('live', 'live');
  }

  /* why: {reason: 'unreachable'|'http'|'malformed', status?, code?} */
  function showOffline(why, now) {
    if (!offlineSince) offlineSince = now;
    var since = hms(offlineSince);
    var text;
    if (why.reason === 'http') {
      text = 'offline \u2014 server answered HTTP ' + why.status +
        (why.code ? ' (' + why.code + ')' : '') + ' since ' + since;
    } else if (why.reason === 'malformed') {
      text = 'offline \u2014 unexpected answer from the server since ' + since;
    } else {
      text = 'offline \u2014 server unreachable since ' + since;
    }
    setStatus('offline', text, why.reason);
    el.empty.hidden = true;
    if (haveNumbers) {
      el.metrics.hidden = false;
      el.metrics.setAttribute('data-stale', 'true');
      el.updated.textContent = 'stale: last values from ' + hms(lastGoodAt) + ', not current';
    } else {
      el.metrics.hidden = true;
      el.updated.textContent = lastGoodAt ? 'last answer at ' + hms(lastGoodAt) : 'no data received yet';
    }
  }

  function errorCode(text) {
    try {
      var body = JSON.parse(text);
      var code = body && body.error && body.error.code;
      return typeof code === 'string' ? code.slice(0, 64) : '';
    } catch (e) { return ''; }
  }

  function fail(reason, status, code) {
    var e = new Error(reason);
    e.why = { reason: reason, status: status, code: code };
    return e;
  }

  function poll() {
    if (inFlight) return;
    inFlight = true;
    var ctrl = window.AbortController ? new AbortController() : null;
    var abortTimer = ctrl ? setTimeout(function () { ctrl.abort(); }, TIMEOUT_MS) : null;
    fetch(GET_URL, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ table: 'SiteMetrics', key: '' }),
      cache: 'no-store',
      signal: ctrl ? ctrl.signal : undefined
    }).then(function (res) {
      if (!res.ok) {
        return res.text().then(
          function (t) { throw fail('http', res.status, errorCode(t)); },
          function () { throw fail('http', res.status, ''); });
      }
      return res.json().then(null, function () { throw fail('malformed'); });
    }).then(function (body) {
      var r = parseRow(body);
      if (!r) throw fail('malformed');
      showRow(r, new Date());
    }).catch(function (e) {
      showOffline(e && e.why ? e.why : { reason: 'unreachable' }, new Date());
    }).then(function () {
      if (abortTimer) clearTimeout(abortTimer);
      inFlight = false;
      schedule(POLL_MS);
    });
  }

  function schedule(ms) {
    if (timer) clearTimeout(timer);
    timer = null;
    /* A hidden tab does not poll; it catches up as soon as it is visible again. */
    if (document.visibilityState === 'hidden') return;
    timer = setTimeout(poll, ms);
  }

  document.addEventListener('visibilitychange', function () {
    if (document.visibilityState === 'visible') schedule(0);
  });

  poll();
}());

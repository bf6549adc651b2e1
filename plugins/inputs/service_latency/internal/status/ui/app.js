// service_latency's operator page. Data comes from /api/services (the
// table) and /api/service/NAME (a detail view); every value reaches the DOM
// as text (textContent, setAttribute), never as markup.
'use strict';
(() => {
  const ST = {0: ['unknown', '?'], 1: ['up', '✓'], 2: ['degraded', '!'], 3: ['down', '✕']};
  const RANK = {3: 0, 2: 1, 0: 2, 1: 3}; // worst first
  const PHASES = ['dns_lookup', 'tcp_connect', 'tls_handshake', 'time_to_first_byte', 'body_transfer'];
  const qs = new URLSearchParams(location.search);
  const REFRESH = Math.max(250, Number(qs.get('refresh')) || 5000);
  const SVG = 'http://www.w3.org/2000/svg';
  let skew = 0; // server clock − ours (from Date)

  const el = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v);
    }
    e.append(...kids);
    return e;
  };
  const svg = (tag, attrs) => {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  };
  const ms = v => v == null ? '—' : v >= 1000 ? (v / 1000).toPrecision(3) + ' s' :
    (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v >= 1 ? v.toFixed(2) : v.toFixed(3)) + ' ms';
  const pct = v => v == null ? '—' : +(v * 100).toFixed(2) + ' %';
  const now = () => Date.now() + skew;
  const ago = t => {
    if (!t) return '';
    let s = Math.max(0, (now() - Date.parse(t)) / 1000);
    if (s < 90) return Math.round(s) + ' s ago';
    if ((s /= 60) < 90) return Math.round(s) + ' min ago';
    if ((s /= 60) < 36) return Math.round(s) + ' h ago';
    return Math.round(s / 24) + ' d ago';
  };
  const badge = (code, derived) => el('span', {
    class: 'st st-' + code, 'data-status': ST[code][0],
    title: derived ? 'derived from the last rounds (no status field)' : null,
  }, ST[code][1] + ' ' + ST[code][0]);
  const svcURL = n => '/service/' + encodeURIComponent(n);

  async function get(url, etag) {
    const h = etag ? {'If-None-Match': etag} : {};
    const r = await fetch(url, {headers: h, cache: 'no-cache'});
    const d = Date.parse(r.headers.get('Date'));
    if (d) { const k = d - Date.now(); skew = Math.abs(k) > 2000 ? k : 0; }
    return r;
  }

  function health(end, ref, gathers) {
    const g = document.getElementById('gather');
    if (!end) { g.textContent = 'no gather has completed yet'; g.className = 'late'; return; }
    const age = (now() - Date.parse(end)) / 1000;
    const late = age > 2 * ref;
    g.className = late ? 'late' : '';
    g.textContent = (late ? '⚠ late: ' : '') + 'gather ' + gathers + ' ended ' + ago(end) +
      ' (interval ' + +ref.toFixed(1) + ' s)';
  }
  function offline(err) {
    const g = document.getElementById('gather');
    g.className = 'late';
    g.textContent = '⚠ the status server did not answer (' + err + '); retrying';
  }

  // rounds: newest first, as {ok, l, lo, hi, res, at, err} (ms)
  function rounds(h) {
    return (h || []).map(x => typeof x === 'string' ? {ok: false, res: x} :
      Array.isArray(x) ? {ok: true, l: x[0], lo: x[1], hi: x[2], res: 'success'} :
      {ok: true, l: x, res: 'success'});
  }

  // A SmokePing-style chart: per round (oldest left) the min–max band, a
  // tick at the median and a line through them; a failed round is a
  // shaded slot with an ×. One <g class="mark"> per round.
  function chart(rs, big) {
    const n = 20, W = big ? 720 : 160, H = big ? 220 : 30;
    const L = big ? 52 : 0, B = big ? 22 : 0, T = big ? 8 : 2;
    const sw = (W - L) / n, ih = H - B - T;
    const s = svg('svg', {class: 'chart', width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img'});
    const old = rs.slice().reverse();
    let top = 0;
    for (const r of old) if (r.ok) top = Math.max(top, r.hi != null ? r.hi : r.l);
    top = top > 0 ? top * 1.1 : 1;
    const y = v => T + ih - (v / top) * ih;
    const fails = old.filter(r => !r.ok).length;
    s.setAttribute('aria-label', `last ${old.length} rounds: ${old.length - fails} succeeded, ${fails} failed`);
    if (big) {
      for (const f of [0, 0.5, 1]) {
        const v = top / 1.1 * f, yy = y(v);
        s.append(svg('line', {class: 'axis', x1: L, x2: W, y1: yy, y2: yy}));
        const t = svg('text', {x: L - 4, y: yy + 4, 'text-anchor': 'end'}); t.textContent = ms(v); s.append(t);
      }
      const first = old.find(r => r.at), last = rs.find(r => r.at);
      if (first) { const t = svg('text', {x: W - old.length * sw, y: H - 6}); t.textContent = new Date(first.at).toLocaleTimeString(); s.append(t); }
      if (last) { const t = svg('text', {x: W, y: H - 6, 'text-anchor': 'end'}); t.textContent = new Date(last.at).toLocaleTimeString(); s.append(t); }
    }
    let pts = [];
    const line = () => { if (pts.length > 1) s.append(svg('polyline', {class: 'med', points: pts.join(' ')})); pts = []; };
    old.forEach((r, i) => {
      const x = W - (old.length - i) * sw;
      const g = svg('g', {class: 'mark', 'data-round': i, 'data-result': r.ok ? 'ok' : 'fail'});
      const tt = svg('title');
      tt.textContent = (r.at ? new Date(r.at).toLocaleString() + ': ' : '') + (r.ok ?
        ms(r.l) + (r.hi != null ? ` (min ${ms(r.lo)}, max ${ms(r.hi)})` : '') : r.res + (r.err ? ': ' + r.err : ''));
      g.append(tt);
      if (r.ok) {
        if (r.hi != null) {
          g.append(svg('rect', {class: 'smoke', x: x + 1, width: Math.max(1, sw - 2), y: y(r.hi), height: Math.max(1, y(r.lo) - y(r.hi))}));
        }
        g.append(svg('line', {class: 'tick', x1: x + 1, x2: x + sw - 1, y1: y(r.l), y2: y(r.l)}));
        pts.push(`${x + sw / 2},${y(r.l)}`);
      } else {
        line();
        const c = x + sw / 2, m = T + ih / 2, k = Math.min(sw, ih) * 0.3;
        g.append(svg('rect', {class: 'failbg', x: x + 1, width: Math.max(1, sw - 2), y: T, height: ih}),
          svg('path', {class: 'fail', d: `M${c - k} ${m - k}L${c + k} ${m + k}M${c + k} ${m - k}L${c - k} ${m + k}`}));
      }
      s.append(g);
    });
    line();
    return s;
  }

  function historyTable(d) {
    const t = el('table', {class: 'history'},
      el('thead', {}, el('tr', {}, ...['Time', 'Result', 'Latency', 'Error'].map(h => el('th', {scope: 'col', text: h})))));
    const tb = el('tbody');
    for (const h of d.service.history || []) {
      tb.append(el('tr', {'data-result': h.result},
        el('td', {title: h.time, text: new Date(h.time).toLocaleString()}),
        el('td', {text: h.result === 'success' ? '✓ success' : '✕ ' + h.result}),
        el('td', {class: 'num', text: h.latency ? ms(h.latency * 1000) : '—'}),
        el('td', {class: 'err', text: h.error || ''})));
    }
    t.append(tb);
    return t;
  }
  function detailRounds(d) {
    return (d.service.history || []).map((h, i) => {
      const s = d.smoke[i];
      return {ok: h.result === 'success', l: (h.latency || 0) * 1000, lo: s ? s[0] * 1000 : null, hi: s ? s[1] * 1000 : null,
        res: h.result, at: h.time, err: h.error};
    });
  }

  // ---- the table ----
  const COLS = [
    ['s', 'Status', 'asc'], ['n', 'Service', 'asc'], ['l', 'Latency', 'desc'], ['a', 'Average', 'desc'],
    ['p', 'p95', 'desc'], ['v', 'Availability', 'asc'], ['f', 'Consecutive failures', 'desc'],
    ['ea', 'Last error', 'desc'], [null, 'Last 20 rounds'],
  ];
  // The server filters, sorts and pages (GET /api/services?q=&sort=&dir=&page=&size=);
  // the rows shown are patched in place, by name.
  function table() {
    const st = {d: null, key: 's', dir: 'asc', q: '', page: 0, size: 100, etag: null, url: '', seq: 0,
      rows: new Map(), open: new Set(), subs: new Map()};
    const main = document.getElementById('main');
    const filter = el('input', {type: 'search', id: 'filter', placeholder: 'name, tag=value or status=down', 'aria-controls': 'services'});
    const counts = el('span', {class: 'counts', id: 'counts'});
    const info = el('span', {id: 'shown', 'aria-live': 'polite'});
    const prev = el('button', {type: 'button', id: 'prev'}, '◀ Previous');
    const next = el('button', {type: 'button', id: 'next'}, 'Next ▶');
    const size = el('select', {id: 'size'}, ...[50, 100, 200, 500, 1000].map(n => el('option', {value: n, text: n})));
    size.value = '100';
    const heads = COLS.map(([k, label]) => k ? el('th', {scope: 'col', 'data-key': k},
      el('button', {type: 'button', 'data-key': k, text: label})) : el('th', {scope: 'col', text: label}));
    const tbody = el('tbody');
    const tableEl = el('table', {id: 'services'}, el('thead', {}, el('tr', {}, ...heads)), tbody);
    main.append(
      el('div', {class: 'bar'}, el('label', {for: 'filter'}, 'Filter '), filter, counts),
      tableEl,
      el('div', {class: 'bar pager'}, prev, info, next, el('label', {for: 'size'}, 'rows per page'), size));

    function cells(x) {
      const err = el('td', {class: 'err'});
      if (x.e || x.ea) err.append(x.e || '', el('span', {class: 'when', title: x.ea, text: ago(x.ea)}));
      return [
        el('td', {class: 'status'}, badge(x.s, x.d)),
        null, // the name cell is kept (its link and button may have the focus)
        el('td', {class: 'num', 'data-col': 'l', text: ms(x.l)}),
        el('td', {class: 'num', 'data-col': 'a', text: ms(x.a)}),
        el('td', {class: 'num', 'data-col': 'p', text: ms(x.p)}),
        el('td', {class: 'num', 'data-col': 'v', text: pct(x.v)}),
        el('td', {class: 'num', 'data-col': 'f', text: x.f == null ? '—' : String(x.f)}),
        err,
        el('td', {class: 'rounds'}, chart(rounds(x.h), false)),
      ];
    }
    function row(x) {
      let r = st.rows.get(x.n);
      const sig = JSON.stringify([x.s, x.d, x.l, x.a, x.p, x.v, x.f, x.e, x.ea, x.h, x.t, ago(x.ea)]);
      if (r && r._sig === sig) return r;
      if (!r) {
        const btn = el('button', {type: 'button', class: 'more', 'aria-expanded': 'false', 'aria-label': 'last 20 results of ' + x.n, text: 'results'});
        btn.addEventListener('click', () => toggle(x.n, btn));
        const name = el('td', {class: 'name'}, el('a', {href: svcURL(x.n), text: x.n}), ' ', btn, el('span', {class: 'tags'}));
        r = el('tr', {'data-name': x.n});
        r.append(...cells(x).map(c => c || name));
        r._name = name;
        st.rows.set(x.n, r);
      } else {
        cells(x).forEach((c, i) => { if (c) r.children[i].replaceWith(c); });
      }
      r._name.querySelector('.tags').textContent = Object.entries(x.t || {}).map(([k, v]) => k + '=' + v).join(' ');
      r._sig = sig;
      return r;
    }
    async function loadSub(name) {
      const sub = st.subs.get(name);
      try {
        const r = await get('/api/service/' + encodeURIComponent(name));
        if (!r.ok) throw new Error(r.status);
        const d = await r.json();
        sub.firstChild.replaceChildren(historyTable(d));
      } catch (e) { sub.firstChild.textContent = 'could not load the results: ' + e.message; }
    }
    function toggle(name, btn) {
      if (st.open.has(name)) { st.open.delete(name); st.subs.get(name)?.remove(); st.subs.delete(name); btn.setAttribute('aria-expanded', 'false'); return; }
      st.open.add(name);
      btn.setAttribute('aria-expanded', 'true');
      st.subs.set(name, el('tr', {class: 'sub', 'data-sub': name}, el('td', {colspan: COLS.length, text: 'loading…'})));
      render();
      loadSub(name);
    }
    function render() {
      const d = st.d;
      if (!d) return;
      const want = [];
      const keep = new Set();
      for (const x of d.services) {
        want.push(row(x));
        keep.add(x.n);
        if (st.open.has(x.n)) want.push(st.subs.get(x.n));
      }
      for (const n of st.rows.keys()) if (!keep.has(n)) st.rows.delete(n);
      const focus = document.activeElement;
      let cur = tbody.firstChild;
      for (const r of want) {
        if (r === cur) { cur = cur.nextSibling; continue; }
        tbody.insertBefore(r, cur);
      }
      while (cur) { const n = cur.nextSibling; cur.remove(); cur = n; }
      if (focus && focus !== document.activeElement && tbody.contains(focus)) focus.focus({preventScroll: true});
      for (const th of heads) {
        const k = th.dataset.key;
        if (k) k === d.sort ? th.setAttribute('aria-sort', d.dir === 'asc' ? 'ascending' : 'descending') : th.removeAttribute('aria-sort');
      }
      const from = d.page * d.size;
      st.page = d.page;
      info.textContent = d.matched ? `${from + 1}–${from + d.services.length} of ${d.matched}` + (d.matched < d.total ? ` (filtered from ${d.total})` : '') : `none of ${d.total} match`;
      prev.disabled = d.page === 0;
      next.disabled = from + d.services.length >= d.matched;
      counts.replaceChildren(...[3, 2, 0, 1].map(k => {
        const w = ST[k][0];
        const b = el('button', {type: 'button', class: 'st st-' + k, 'data-count': w, title: 'show only ' + w}, `${ST[k][1]} ${d.counts[w]} ${w}`);
        b.addEventListener('click', () => { filter.value = st.q = 'status=' + w; st.page = 0; load(); });
        return b;
      }));
    }
    heads.forEach((th, i) => {
      const b = th.querySelector('button');
      if (!b) return;
      b.addEventListener('click', () => {
        const k = COLS[i][0];
        if (st.key === k) st.dir = st.dir === 'asc' ? 'desc' : 'asc';
        else { st.key = k; st.dir = COLS[i][2]; }
        st.page = 0;
        load();
      });
    });
    let t;
    filter.addEventListener('input', () => { clearTimeout(t); t = setTimeout(() => { st.q = filter.value; st.page = 0; load(); }, 150); });
    prev.addEventListener('click', () => { st.page--; load(); });
    next.addEventListener('click', () => { st.page++; load(); });
    size.addEventListener('change', () => { st.size = Number(size.value); st.page = 0; load(); });

    let timer;
    async function load() {
      clearTimeout(timer);
      const seq = ++st.seq;
      const u = '/api/services?' + new URLSearchParams({q: st.q, sort: st.key, dir: st.dir, page: st.page, size: st.size});
      try {
        const r = await get(u, u === st.url ? st.etag : null);
        if (seq !== st.seq) return; // a newer request was made
        if (r.status === 200) {
          const d = await r.json();
          if (seq !== st.seq) return;
          st.etag = r.headers.get('ETag');
          st.url = u;
          st.d = d;
          document.getElementById('version').textContent = 'version ' + d.version;
          render();
          for (const n of st.open) if (st.rows.has(n)) loadSub(n);
          document.body.dataset.gathers = d.gathers;
          document.body.dataset.loaded = seq;
          if (!window.firstDrawn) window.firstDrawn = performance.now();
        } else if (r.status === 304) render();
        else throw new Error('HTTP ' + r.status);
        if (st.d) health(st.d.end, st.d.ref, st.d.gathers);
      } catch (e) { if (seq === st.seq) offline(e.message); }
      if (seq === st.seq) timer = setTimeout(load, REFRESH);
    }
    load();
  }

  // ---- the detail view ----
  function detail(name) {
    document.title = name + ' — service_latency';
    const main = document.getElementById('main');
    const sec = id => el('section', {id});
    const head = sec('head'), figs = sec('figures'), big = sec('chart'), ph = sec('phases'), tls = sec('tls'),
      hist = sec('results'), dbg = sec('debug');
    const allTable = el('div');
    const all = el('details', {id: 'fields'}, el('summary', {text: 'every field'}), allTable);
    main.append(el('p', {}, el('a', {href: '/', text: '◀ all services'})), head, el('div', {class: 'cols'}, figs, tls), big, ph, hist, all, dbg);
    let last = '';
    let wired = false;

    function fig(dl, label, key, raw, text) {
      dl.append(el('dt', {text: label}), el('dd', {'data-field': key, 'data-value': raw == null ? '' : String(raw), text}));
    }
    function show(d) {
      const sv = d.service, f = sv.fields || {};
      head.replaceChildren(el('h2', {}, badge(d.status, d.derived), ' ', el('span', {id: 'name', text: sv.name})),
        el('p', {class: 'tags', text: Object.entries(sv.tags || {}).map(([k, v]) => k + '=' + v).join('  ')}));
      const dl = el('dl', {class: 'figs'});
      fig(dl, 'status', 'status', ST[d.status][0], ST[d.status][1] + ' ' + ST[d.status][0]);
      const lat = k => f[k] == null ? '—' : ms(f[k] * 1000);
      fig(dl, 'latency', 'latency', f.latency, lat('latency'));
      fig(dl, 'average', 'latency_avg', f.latency_avg, lat('latency_avg'));
      for (const k of Object.keys(f).filter(k => /^latency_p[0-9_]+$/.test(k)).sort()) fig(dl, k.slice(8).replace('_', '.'), k, f[k], lat(k));
      for (const k of ['latency_min', 'latency_max', 'latency_ewma', 'latency_stddev', 'jitter']) if (f[k] != null) fig(dl, k.replace('latency_', ''), k, f[k], lat(k));
      fig(dl, 'availability', 'availability', f.availability, pct(f.availability));
      for (const k of ['consecutive_failures', 'probes', 'failures', 'latency_count']) if (f[k] != null) fig(dl, k.replace('_', ' '), k, f[k], String(f[k]));
      fig(dl, 'last success', 'last_success', sv.last_success, sv.last_success ? new Date(sv.last_success).toLocaleString() + ' (' + ago(sv.last_success) + ')' : 'never');
      fig(dl, 'last failure', 'last_failure', sv.last_failure, sv.last_failure ? new Date(sv.last_failure).toLocaleString() + ' (' + ago(sv.last_failure) + ')' : 'never');
      if (sv.last_error_at) fig(dl, 'last error', 'last_error', sv.last_error, (sv.last_error || '') + ' — ' + ago(sv.last_error_at));
      figs.replaceChildren(el('h2', {text: 'Now'}), dl);

      tls.replaceChildren();
      if (f.tls_cert_expiry != null) {
        const days = f.tls_cert_expiry / 86400, at = new Date(now() + f.tls_cert_expiry * 1000);
        const p = el('p', {'data-field': 'tls_cert_expiry', 'data-value': String(f.tls_cert_expiry), class: days < 14 ? 'warn' : null,
          text: (days < 0 ? '✕ expired ' + (-days).toFixed(1) + ' days ago' : (days < 14 ? '⚠ ' : '') + 'expires in ' + days.toFixed(1) + ' days') + ' (' + at.toISOString().slice(0, 16).replace('T', ' ') + ' UTC)'});
        tls.append(el('h2', {text: 'TLS certificate'}), p);
      }
      big.replaceChildren(el('h2', {text: 'Last 20 rounds'}), chart(detailRounds(d), true));

      const present = PHASES.filter(k => f[k] != null);
      ph.replaceChildren();
      if (present.length) {
        const total = present.reduce((s, k) => s + f[k], 0) || 1;
        const bar = el('div', {class: 'phases', role: 'img', 'aria-label': 'phases of the last probe'});
        const leg = el('ul', {class: 'legend'});
        present.forEach(k => {
          const i = PHASES.indexOf(k), v = f[k];
          const d = el('div', {class: 'ph-' + i, title: k + ' ' + ms(v * 1000), 'data-phase': k});
          d.style.width = (v / total * 100) + '%';
          bar.append(d);
          leg.append(el('li', {'data-field': k, 'data-value': String(v)}, el('i', {class: 'ph-' + i}), `${i + 1}. ${k}: ${ms(v * 1000)}`));
        });
        ph.append(el('h2', {text: 'Phases of the last probe'}), bar, leg);
      }
      hist.replaceChildren(el('h2', {text: 'Last 20 results'}), historyTable(d));
      const ft = el('table', {}, el('thead', {}, el('tr', {}, el('th', {scope: 'col', text: 'field'}), el('th', {scope: 'col', text: 'value'}))));
      const fb = el('tbody');
      for (const k of Object.keys(f).sort()) fb.append(el('tr', {}, el('td', {text: k}), el('td', {'data-field': k, 'data-value': String(f[k]), text: String(f[k])})));
      ft.append(fb);
      allTable.replaceChildren(ft);

      if (!wired) {
        wired = true;
        if (!d.debug) {
          dbg.append(el('h2', {text: 'Debug trace'}), el('p', {id: 'probe-off', text: 'The debug probe is off: set status_debug = true to run one from here (GET /probe/NAME).'}));
        } else {
          const out = el('pre', {class: 'trace', id: 'trace', 'aria-live': 'polite'});
          const a = el('a', {href: '/probe/' + encodeURIComponent(name), id: 'probe', text: 'Run the debug probe now'});
          a.addEventListener('click', async ev => {
            ev.preventDefault();
            out.textContent = 'probing…';
            try {
              const r = await fetch(a.href, {cache: 'no-store'});
              const t = await r.text();
              out.textContent = (r.ok ? '' : 'HTTP ' + r.status + ': ') + t;
            } catch (e) { out.textContent = 'failed: ' + e.message; }
          });
          dbg.append(el('h2', {text: 'Debug trace'}), el('p', {}, a, ' (runs this probe once, now; one per second)'), out);
        }
      }
    }
    async function refresh() {
      try {
        const r = await get('/api/service/' + encodeURIComponent(name));
        if (r.status === 404) {
          head.replaceChildren(el('h2', {text: 'no service named ' + name}));
          document.getElementById('gather').textContent = '';
        } else if (!r.ok) throw new Error('HTTP ' + r.status);
        else {
          const t = await r.text();
          const d = JSON.parse(t);
          if (t !== last) { show(d); last = t; document.body.dataset.gathers = d.gathers; }
          health(d.end, d.ref, d.gathers);
        }
      } catch (e) { offline(e.message); }
      setTimeout(refresh, REFRESH);
    }
    refresh();
  }

  const m = location.pathname.match(/^\/service\/(.+)$/);
  if (m) detail(decodeURIComponent(m[1])); else table();
})();

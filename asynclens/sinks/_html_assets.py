"""The inline CSS and JavaScript of the HTML report (no network, no libraries).

The script reads the JSON data block, builds every element with
``createElement``/``textContent`` (user text is never parsed as HTML) and sets
``data-rendered="ok"`` on ``<body>`` when done; any script error sets
``data-error`` and shows a banner, which the browser test checks.
"""

from __future__ import annotations

__all__ = ["CSS", "JS"]

CSS = """
:root{--bg:#fff;--fg:#1d2330;--mut:#667085;--line:#e4e7ec;--bad:#d92d20;--warn:#b54708;--acc:#2e5bff}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{padding:14px 22px;border-bottom:1px solid var(--line);background:#f8f9fb}
h1{font-size:18px;margin:0 0 4px}
h2{font-size:15px;margin:0 0 8px}
.meta{color:var(--mut);font-size:13px}
.cards{display:flex;gap:10px;flex-wrap:wrap;margin-top:10px}
.card{border:1px solid var(--line);border-radius:6px;padding:6px 12px;background:#fff;min-width:92px}
.card b{display:block;font-size:18px}
.card.bad b{color:var(--bad)}
.card span{color:var(--mut);font-size:12px}
.notes{margin:8px 0 0;padding:0 0 0 18px;color:var(--warn);font-size:13px}
nav{position:sticky;top:0;z-index:5;background:#fff;border-bottom:1px solid var(--line);padding:6px 22px}
nav a{margin-right:14px;color:var(--acc);text-decoration:none;font-size:13px}
section{padding:14px 22px;border-bottom:1px solid var(--line)}
.hint{color:var(--mut);font-size:12px;margin:0 0 6px}
.tl-wrap{position:relative;height:420px;overflow-y:auto;border:1px solid var(--line);border-radius:4px}
.tl-wrap canvas{position:sticky;top:0;display:block;cursor:grab}
.tools{margin-bottom:6px;display:flex;gap:6px;align-items:center;flex-wrap:wrap}
button{font:inherit;font-size:12px;padding:2px 9px;border:1px solid #c8ccd4;border-radius:4px;background:#fff;cursor:pointer}
button.on{background:var(--acc);color:#fff;border-color:var(--acc)}
#al-tip{position:fixed;z-index:20;pointer-events:none;background:#1d2330;color:#fff;padding:5px 8px;border-radius:4px;font-size:12px;max-width:520px;display:none;white-space:pre-wrap}
.detail{margin-top:8px;padding:8px 10px;border:1px solid var(--line);border-radius:4px;background:#fbfbfd;font-size:13px;display:none}
.bar{display:flex;height:10px;border-radius:3px;overflow:hidden;margin:4px 0;max-width:480px;background:#eee}
.legend{font-size:12px;color:var(--mut)}
.legend i{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px;vertical-align:-1px;border-radius:2px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:#f8f9fb;font-weight:600}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
pre{margin:4px 0;white-space:pre-wrap;word-break:break-all}
pre.summary{background:#f8f9fb;padding:10px;border-radius:4px;white-space:pre;overflow-x:auto;word-break:normal}
.cause{display:inline-block;padding:0 6px;border-radius:8px;font-size:11px;background:#fee4e2;color:var(--bad)}
.empty{color:var(--mut);font-style:italic}
details.full>summary{color:var(--mut);font-size:12px}
#al-error{display:none;background:var(--bad);color:#fff;padding:8px 22px}
svg text{font-size:11px;fill:var(--mut)}
svg text.elu{fill:#12b76a}
"""

JS = r"""
(function () {
'use strict';
function fail(msg) {
  document.body.setAttribute('data-error', String(msg));
  var b = document.getElementById('al-error');
  if (!b) { b = document.createElement('div'); b.id = 'al-error'; document.body.insertBefore(b, document.body.firstChild); }
  b.style.display = 'block';
  b.textContent = 'The report could not be drawn completely: ' + msg;
}
window.onerror = function (msg, src, line) { fail(msg + ' (line ' + line + ')'); return false; };

var D = JSON.parse(document.getElementById('asynclens-data').textContent);
var STR = D.strings;
var tip;

function el(tag, cls, text) {
  var e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function add(parent) { for (var i = 1; i < arguments.length; i++) if (arguments[i]) parent.appendChild(arguments[i]); return parent; }
function fmt(us) {
  if (us === null || us === undefined || us < 0) return '-';
  if (us < 1) return Math.round(us * 1000) + ' ns';
  if (us < 1000) return us.toFixed(1) + ' µs';
  if (us < 1e6) return (us / 1000).toFixed(1) + ' ms';
  return (us / 1e6).toFixed(2) + ' s';
}
function hue(i) { return 30 + (i * 137.508) % 280; }
// the breakdown's parts, in the order of the records' fields (cpu, blocked, sched, I/O, executor)
var PARTS = [['#12b76a', 'on CPU'], ['#d92d20', 'blocked in a call'], ['#f79009', 'waiting for the loop'], ['#98a2b3', 'waiting for I/O'], ['#7a5af8', 'executor']];
function breakdownText(values) {
  var out = [];
  values.forEach(function (v, k) { if (v > 0 || k === 0) out.push(fmt(v) + ' ' + PARTS[k][1]); });
  return out.join(' + ');
}
function showTip(ev, text) {
  tip.textContent = text; tip.style.display = 'block';
  var x = ev.clientX + 14, y = ev.clientY + 14;
  if (x + 360 > window.innerWidth) x = Math.max(4, ev.clientX - 370);
  tip.style.left = x + 'px'; tip.style.top = y + 'px';
}
function hideTip() { tip.style.display = 'none'; }
function section(id, title, hint) {
  var s = el('section'); s.id = id;
  add(s, el('h2', null, title));
  if (hint) add(s, el('p', 'hint', hint));
  document.body.appendChild(s);
  return s;
}
function setupCanvas(canvas, w, h) {
  var r = window.devicePixelRatio || 1;
  canvas.width = Math.max(1, Math.floor(w * r)); canvas.height = Math.max(1, Math.floor(h * r));
  canvas.style.width = w + 'px'; canvas.style.height = h + 'px';
  var ctx = canvas.getContext('2d'); ctx.setTransform(r, 0, 0, r, 0, 0);
  return ctx;
}
function clipText(ctx, text, width) {
  if (ctx.measureText(text).width <= width) return text;
  var lo = 0, hi = text.length;
  while (lo < hi) { var mid = (lo + hi + 1) >> 1; if (ctx.measureText(text.slice(0, mid) + '…').width <= width) lo = mid; else hi = mid - 1; }
  return lo > 0 ? text.slice(0, lo) + '…' : '';
}

// ------------------------------------------------------------------ header
function header() {
  var h = el('header');
  add(h, el('h1', null, D.title));
  add(h, el('div', 'meta', 'asynclens ' + D.version + ' · ' + D.processes.join(', ') + ' · run of ' + fmt(D.duration_us) + ' · generated ' + D.generated));
  var cards = el('div', 'cards');
  var c = D.counts;
  function card(label, value, bad) { var k = el('div', 'card' + (bad ? ' bad' : '')); add(k, el('b', null, value), el('span', null, label)); cards.appendChild(k); }
  card('spans', c.span || 0);
  card('stalls', c.stall || 0, (c.stall || 0) > 0);
  card('left open', c.leak || 0, (c.leak || 0) > 0);
  if (c.task) card('tasks', c.task);
  if (c.gc) card('GC pauses', c.gc);
  if (c.executor_job) card('executor jobs', c.executor_job);
  add(h, cards);
  if (D.notes.length) { var ul = el('ul', 'notes'); D.notes.forEach(function (n) { ul.appendChild(el('li', null, n)); }); h.appendChild(ul); }
  document.body.appendChild(h);
  var nav = el('nav');
  [['tl', 'Timeline'], ['flame', 'Flame graph'], ['lag', 'Lag'], ['stalls', 'Stalls'], ['leaks', 'Leaks'], ['findings', 'Findings'], ['summary', 'Summary']].forEach(function (p) {
    var a = el('a', null, p[1]); a.href = '#' + p[0]; nav.appendChild(a);
  });
  document.body.appendChild(nav);
}

// ---------------------------------------------------------------- timeline
function timeline() {
  var T = D.timeline, spans = T.spans, tracks = T.tracks;
  var s = section('tl', 'Timeline: tasks and spans',
    'One row per task (or thread). Click a span to connect the slivers of its request across tasks and to see its breakdown (along its critical path) and the child task that held it up; drag to pan, ctrl+wheel or the buttons to zoom, double-click to reset.');
  if (!spans.length) { add(s, el('p', 'empty', 'No spans were recorded. Decorate functions with @asynclens.trace or use asynclens.span().')); return; }
  var LABEL = 190, BAR = 15, AXIS = 22, PAD = 5;
  var rowTop = [], y = AXIS;
  tracks.forEach(function (t) { rowTop.push(y); y += Math.max(1, t.depth) * BAR + PAD * 2; });
  var totalH = y;
  var byTrack = tracks.map(function () { return []; });
  spans.forEach(function (sp, i) { byTrack[sp[0]].push(i); });
  var end = D.duration_us;
  spans.forEach(function (sp) { if (sp[2] + sp[3] > end) end = sp[2] + sp[3]; });
  var view = { t0: 0, t1: Math.max(end, 1) };
  var selTrace = -1, selSpan = -1, selHeld = -1;

  var tools = el('div', 'tools');
  var zin = el('button', null, 'zoom in'), zout = el('button', null, 'zoom out'), zreset = el('button', null, 'reset');
  add(tools, zin, zout, zreset, el('span', 'legend', tracks.length + ' rows · ' + T.shown + ' spans'));
  var lg = el('span', 'legend'); lg.appendChild(el('i')).style.background = 'rgba(217,45,32,.25)'; lg.appendChild(document.createTextNode('stall'));
  lg.appendChild(el('i')).style.background = '#d92d20'; lg.appendChild(document.createTextNode('error'));
  tools.appendChild(lg);
  var wrap = el('div', 'tl-wrap'), canvas = el('canvas'), spacer = el('div');
  add(wrap, canvas, spacer);
  var detail = el('div', 'detail');
  add(s, tools, wrap, detail);
  var W = 0, H = 0, ctx = null;

  function resize() {
    W = Math.max(400, wrap.clientWidth - 2);
    H = Math.min(totalH, 420);
    wrap.style.height = (H + 2) + 'px';
    spacer.style.height = Math.max(0, totalH - H) + 'px';
    ctx = setupCanvas(canvas, W, H);
    draw();
  }
  function xOf(t) { return LABEL + (t - view.t0) / (view.t1 - view.t0) * (W - LABEL); }
  function tOf(x) { return view.t0 + (x - LABEL) / (W - LABEL) * (view.t1 - view.t0); }
  function draw() {
    var top = wrap.scrollTop;
    ctx.clearRect(0, 0, W, H);
    ctx.font = '11px system-ui, sans-serif';
    // stalls as bands
    ctx.fillStyle = 'rgba(217,45,32,0.13)';
    D.stalls.forEach(function (st) { var a = xOf(st.t), b = xOf(st.t + st.dur); if (b >= LABEL && a <= W) ctx.fillRect(Math.max(LABEL, a), AXIS, Math.max(1, b - Math.max(LABEL, a)), H - AXIS); });
    for (var r = 0; r < tracks.length; r++) {
      var ry = rowTop[r] - top;
      var rh = Math.max(1, tracks[r].depth) * BAR + PAD * 2;
      if (ry + rh < AXIS || ry > H) continue;
      if (r % 2) { ctx.fillStyle = 'rgba(0,0,0,0.025)'; ctx.fillRect(0, ry, W, rh); }
      var list = byTrack[r];
      for (var k = 0; k < list.length; k++) {
        var i = list[k], sp = spans[i];
        var x0 = xOf(sp[2]), x1 = xOf(sp[2] + sp[3]);
        if (x1 < LABEL || x0 > W) continue;
        x0 = Math.max(LABEL, x0); var w = Math.max(1, x1 - x0);
        var by = ry + PAD + sp[1] * BAR;
        var dim = selTrace >= 0 && sp[5] !== selTrace;
        ctx.fillStyle = sp[6] === 1 ? 'hsla(4,75%,52%,' + (dim ? 0.25 : 1) + ')' : 'hsla(' + hue(sp[4]) + ',55%,' + (sp[6] === 2 ? '78%' : '66%') + ',' + (dim ? 0.22 : 1) + ')';
        ctx.fillRect(x0, by, w, BAR - 2);
        if (i === selSpan) { ctx.strokeStyle = '#111'; ctx.lineWidth = 2; ctx.strokeRect(x0, by, w, BAR - 2); }
        if (i === selHeld) { ctx.strokeStyle = '#d92d20'; ctx.lineWidth = 2; ctx.setLineDash([4, 2]); ctx.strokeRect(x0, by, w, BAR - 2); ctx.setLineDash([]); }
        if (w > 30) { ctx.fillStyle = dim ? 'rgba(0,0,0,0.35)' : '#111'; ctx.fillText(clipText(ctx, STR[sp[4]], w - 4), x0 + 2, by + BAR - 5); }
      }
    }
    if (selTrace >= 0) {  // connect parent -> child across rows
      ctx.strokeStyle = '#1d2330'; ctx.lineWidth = 1.2; ctx.fillStyle = '#1d2330';
      spans.forEach(function (sp) {
        if (sp[5] !== selTrace || sp[7] < 0) return;
        var p = spans[sp[7]];
        if (p[0] === sp[0]) return;
        var x = Math.max(LABEL, xOf(sp[2]));
        var y0 = rowTop[p[0]] - top + PAD + p[1] * BAR + (BAR - 2) / 2;
        var y1 = rowTop[sp[0]] - top + PAD + sp[1] * BAR + (BAR - 2) / 2;
        ctx.beginPath(); ctx.moveTo(x, y0); ctx.lineTo(x, y1); ctx.stroke();
        ctx.beginPath(); ctx.arc(x, y0, 2.5, 0, 6.3); ctx.fill();
        ctx.beginPath(); ctx.moveTo(x - 3.5, y1 - 5 * Math.sign(y1 - y0)); ctx.lineTo(x + 3.5, y1 - 5 * Math.sign(y1 - y0)); ctx.lineTo(x, y1); ctx.fill();
      });
    }
    if (selHeld >= 0) {  // the child that held the selected span up: an arrow from where its work ended
      var hs = spans[selHeld], ss = spans[selSpan];
      var hx = xOf(Math.min(hs[2] + hs[3], ss[2] + ss[3]));
      if (hx >= LABEL && hx <= W) {
        var hy = rowTop[hs[0]] - top + PAD + hs[1] * BAR + (BAR - 2) / 2;
        var sy = rowTop[ss[0]] - top + PAD + ss[1] * BAR + (BAR - 2) / 2;
        var dir = Math.sign(sy - hy) || 1;
        ctx.strokeStyle = '#d92d20'; ctx.fillStyle = '#d92d20'; ctx.lineWidth = 1.5; ctx.setLineDash([4, 3]);
        ctx.beginPath(); ctx.moveTo(hx, hy); ctx.lineTo(hx, sy - 5 * dir); ctx.stroke(); ctx.setLineDash([]);
        ctx.beginPath(); ctx.moveTo(hx - 4, sy - 6 * dir); ctx.lineTo(hx + 4, sy - 6 * dir); ctx.lineTo(hx, sy); ctx.fill();
        var note = 'held up by ' + (T.info[selSpan] || {}).held;
        ctx.font = '11px system-ui, sans-serif'; ctx.fillText(clipText(ctx, note, Math.max(0, W - hx - 8)), hx + 5, (hy + sy) / 2);
      }
    }
    // labels column and axis on top
    ctx.fillStyle = '#f8f9fb'; ctx.fillRect(0, 0, LABEL - 4, H);
    ctx.fillStyle = '#1d2330';
    for (r = 0; r < tracks.length; r++) {
      ry = rowTop[r] - top;
      if (ry + BAR < AXIS || ry > H) continue;
      ctx.fillText(clipText(ctx, tracks[r].name, LABEL - 12), 6, ry + PAD + BAR - 4);
    }
    ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, W, AXIS);
    ctx.strokeStyle = '#d0d5dd'; ctx.beginPath(); ctx.moveTo(0, AXIS - 0.5); ctx.lineTo(W, AXIS - 0.5); ctx.stroke();
    var span = view.t1 - view.t0, step = Math.pow(10, Math.floor(Math.log10(span / 6)));
    if (span / step > 12) step *= 5; else if (span / step > 6) step *= 2;
    ctx.fillStyle = '#667085';
    for (var t = Math.ceil(view.t0 / step) * step; t <= view.t1; t += step) {
      var x = xOf(t); ctx.fillRect(x, AXIS - 5, 1, 5); ctx.fillText(fmt(t), x + 2, AXIS - 8);
    }
  }
  function hit(ev) {
    var rect = canvas.getBoundingClientRect(), mx = ev.clientX - rect.left, my = ev.clientY - rect.top + wrap.scrollTop;
    if (mx < LABEL || my - wrap.scrollTop < AXIS) return -1;
    for (var r = 0; r < tracks.length; r++) {
      var rh = Math.max(1, tracks[r].depth) * BAR + PAD * 2;
      if (my >= rowTop[r] && my < rowTop[r] + rh) {
        var depth = Math.floor((my - rowTop[r] - PAD) / BAR), t = tOf(mx), slack = (view.t1 - view.t0) / (W - LABEL) * 2, best = -1;
        byTrack[r].forEach(function (i) { var sp = spans[i]; if (sp[1] === depth && t >= sp[2] - slack && t <= sp[2] + sp[3] + slack) best = i; });
        return best;
      }
    }
    return -1;
  }
  function describe(i) {
    var sp = spans[i], info = T.info[i] || {};
    var lines = [STR[sp[4]] + '  ' + fmt(sp[3]), 'row: ' + tracks[sp[0]].name, 'starts at ' + fmt(sp[2])];
    if (sp[8] >= 0) lines.push('cpu ' + fmt(sp[8]) + ' · blocked in a call ' + fmt(sp[9]) + ' · waiting for loop ' + fmt(sp[10]) + ' · I/O wait ' + fmt(sp[11]) + ' · executor ' + fmt(sp[12]));
    if (info.own) lines.push('own task: ' + breakdownText(info.own));
    if (info.held) lines.push('held up by ' + info.held);
    if (info.error) lines.push('error: ' + info.error);
    if (sp[6] === 2) lines.push('cancelled');
    return lines.join('\n');
  }
  function breakdownBar(values, total, title) {
    var bar = el('div', 'bar'), legend = el('div', 'legend');
    if (title) legend.appendChild(document.createTextNode(title));
    values.forEach(function (v, k) {
      var c = PARTS[k];
      if (v > 0) { var seg = el('div'); seg.style.width = (100 * v / Math.max(total, 1)) + '%'; seg.style.background = c[0]; bar.appendChild(seg); }
      if (v > 0 || k !== 1) { var key = el('i'); key.style.background = c[0]; legend.appendChild(key); legend.appendChild(document.createTextNode(c[1] + ' ' + fmt(v))); }
    });
    add(detail, bar, legend);
  }
  function select(i) {
    selSpan = i; selTrace = i >= 0 ? spans[i][5] : -1;
    selHeld = i >= 0 && T.info[i] && T.info[i].held_span !== undefined ? T.info[i].held_span : -1;
    detail.textContent = '';
    if (i < 0) { detail.style.display = 'none'; draw(); return; }
    var sp = spans[i], info = T.info[i] || {};
    detail.style.display = 'block';
    add(detail, el('b', null, STR[sp[4]]), document.createTextNode('  ' + fmt(sp[3]) + ' on ' + tracks[sp[0]].name));
    if (sp[8] >= 0) breakdownBar(sp.slice(8, 13), sp[3], info.own ? 'critical path: ' : null);
    if (info.own) breakdownBar(info.own, sp[3], 'own task: ');
    if (info.held) add(detail, el('div', null, 'held up by ' + info.held + (selHeld >= 0 ? ' (red dashed arrow: where its work ended, on ' + tracks[spans[selHeld][0]].name + ')' : '')));
    if (info.error) add(detail, el('div', null, 'error: ' + info.error));
    if (info.attrs) { var pre = el('pre'); pre.textContent = Object.keys(info.attrs).map(function (k) { return k + ' = ' + JSON.stringify(info.attrs[k]); }).join('\n'); detail.appendChild(pre); }
    var same = []; spans.forEach(function (o, j) { if (o[5] === selTrace) same.push(j); });
    same.sort(function (a, b) { return spans[a][2] - spans[b][2]; });
    var rows = {}; same.forEach(function (j) { rows[spans[j][0]] = 1; });
    add(detail, el('div', 'hint', 'This request: ' + same.length + ' spans over ' + Object.keys(rows).length + ' rows'));
    var list = el('pre');
    list.textContent = same.slice(0, 40).map(function (j) { var o = spans[j]; return fmt(o[2]).padStart(10) + '  ' + fmt(o[3]).padStart(9) + '  ' + '  '.repeat(Math.min(o[1], 8)) + STR[o[4]] + '   [' + tracks[o[0]].name + ']'; }).join('\n') + (same.length > 40 ? '\n…' : '');
    detail.appendChild(list);
    draw();
  }
  function zoom(f, cx) {
    var t = cx === undefined ? (view.t0 + view.t1) / 2 : tOf(cx), span = (view.t1 - view.t0) * f;
    span = Math.max(span, 1); view.t0 = t - (t - view.t0) * f; view.t1 = view.t0 + span; draw();
  }
  var drag = null;
  canvas.addEventListener('mousedown', function (ev) { drag = { x: ev.clientX, t0: view.t0, t1: view.t1, moved: false }; });
  window.addEventListener('mouseup', function (ev) {
    if (drag && !drag.moved && ev.target === canvas) select(hit(ev));
    drag = null;
  });
  canvas.addEventListener('mousemove', function (ev) {
    if (drag) {
      var dx = ev.clientX - drag.x; if (Math.abs(dx) > 2) drag.moved = true;
      var dt = dx / (W - LABEL) * (drag.t1 - drag.t0); view.t0 = drag.t0 - dt; view.t1 = drag.t1 - dt; draw(); hideTip(); return;
    }
    var i = hit(ev); if (i >= 0) showTip(ev, describe(i)); else hideTip();
  });
  canvas.addEventListener('mouseleave', hideTip);
  canvas.addEventListener('dblclick', function () { view.t0 = 0; view.t1 = Math.max(end, 1); draw(); });
  canvas.addEventListener('wheel', function (ev) { if (ev.ctrlKey || ev.metaKey) { ev.preventDefault(); zoom(ev.deltaY > 0 ? 1.25 : 0.8, ev.clientX - canvas.getBoundingClientRect().left); } }, { passive: false });
  wrap.addEventListener('scroll', draw);
  zin.onclick = function () { zoom(0.5); }; zout.onclick = function () { zoom(2); };
  zreset.onclick = function () { view.t0 = 0; view.t1 = Math.max(end, 1); select(-1); };
  window.addEventListener('resize', resize);
  resize();
  var wanted = /^#span=(.+)$/.exec(window.location.hash);  // report.html#span=NAME selects its slowest span
  if (wanted) {
    var name = decodeURIComponent(wanted[1]), best = -1;
    spans.forEach(function (sp, i) { if (STR[sp[4]] === name && (best < 0 || sp[3] > spans[best][3])) best = i; });
    if (best >= 0) select(best);
  }
}

// -------------------------------------------------------------- flame graph
function flame() {
  var s = section('flame', 'Flame graph', 'Span names nested by parent; widths are self time summed over every span (concurrent children add up). Stalls appear under [event loop stall] with their sampled stacks (the program\'s frames; full stacks adds the standard library\'s and packages\'). Click to zoom in, click the top bar to zoom out.');
  var root = D.flame.root;
  if (!root[1] && !root[2]) { add(s, el('p', 'empty', 'Nothing to draw yet: no spans or stalls were recorded.')); return; }
  var mode = 1;
  var tools = el('div', 'tools'), bw = el('button', 'on', 'wall time'), bc = el('button', null, 'CPU time');
  if (!D.flame.has_cpu) { bc.disabled = true; bc.title = 'no CPU time was measured (the scheduler probe was off)'; }
  add(tools, bw, bc);
  if (D.flame.root_full) {
    var bf = el('button', null, 'full stacks');
    bf.onclick = function () { var full = bf.className !== 'on'; bf.className = full ? 'on' : ''; root = full ? D.flame.root_full : D.flame.root; focus = [root]; maxDepth = Math.min(depthOf(root), 40); draw(); };
    add(tools, bf);
  }
  var canvas = el('canvas');
  add(s, tools, canvas);
  var ROW = 18, focus = [root], W = 0, ctx, boxes = [];
  function depthOf(n) { var d = 0; n[3].forEach(function (k) { d = Math.max(d, depthOf(k)); }); return d + 1; }
  var maxDepth = Math.min(depthOf(root), 40);
  function draw() {
    W = Math.max(400, s.clientWidth - 44);
    var H = (maxDepth + 1) * ROW + 4;
    ctx = setupCanvas(canvas, W, H);
    ctx.font = '11px system-ui, sans-serif';
    boxes = [];
    var top = focus[focus.length - 1], total = top[mode] || 1;
    function node(n, x, w, d) {
      if (w < 0.5 || d > maxDepth) return;
      var y = d * ROW;
      var name = STR[n[0]];
      ctx.fillStyle = name.charAt(0) === '[' || (focus.length > 1 && d === 0 && false) ? 'hsl(4,70%,62%)' : 'hsl(' + (20 + hue(n[0]) % 40) + ',80%,' + (60 + (n[0] % 7) * 2) + '%)';
      ctx.fillRect(x, y, Math.max(0.5, w - 0.5), ROW - 1);
      if (w > 24) { ctx.fillStyle = '#111'; ctx.fillText(clipText(ctx, name, w - 6), x + 3, y + ROW - 5); }
      boxes.push([x, y, w, n]);
      var cx = x;
      n[3].forEach(function (k) { var kw = w * (k[mode] / (n[mode] || 1)); node(k, cx, kw, d + 1); cx += kw; });
    }
    // ancestors of the focus as full-width bars
    node(top, 0, W, 0);
    void total;
  }
  function at(ev) {
    var r = canvas.getBoundingClientRect(), x = ev.clientX - r.left, y = ev.clientY - r.top;
    for (var i = boxes.length - 1; i >= 0; i--) { var b = boxes[i]; if (x >= b[0] && x < b[0] + b[2] && y >= b[1] && y < b[1] + ROW) return b[3]; }
    return null;
  }
  canvas.addEventListener('mousemove', function (ev) {
    var n = at(ev); if (!n) { hideTip(); return; }
    var rootv = root[mode] || 1;
    showTip(ev, STR[n[0]] + '\nwall ' + fmt(n[1]) + ' · CPU ' + fmt(n[2]) + '\n' + (100 * n[mode] / rootv).toFixed(1) + '% of all ' + (mode === 1 ? 'wall' : 'CPU') + ' time');
  });
  canvas.addEventListener('mouseleave', hideTip);
  canvas.addEventListener('click', function (ev) {
    var n = at(ev); if (!n) return;
    if (n === focus[focus.length - 1]) { if (focus.length > 1) focus.pop(); } else focus.push(n);
    draw();
  });
  bw.onclick = function () { mode = 1; bw.className = 'on'; bc.className = ''; focus = [root]; draw(); };
  bc.onclick = function () { mode = 2; bc.className = 'on'; bw.className = ''; focus = [root]; draw(); };
  window.addEventListener('resize', draw);
  draw();
}

// --------------------------------------------------------------------- lag
var SVG = 'http://www.w3.org/2000/svg';
function svgEl(tag, attrs) { var e = document.createElementNS(SVG, tag); for (var k in attrs) e.setAttribute(k, attrs[k]); return e; }
function lagChart() {
  var s = section('lag', 'Event loop lag', 'How late the event loop ran its callbacks: p99 (shaded) and max per lag window on the left axis (ms), utilisation (ELU) on the right axis (0–100 %), and each stall where it happened (red band, dot at the time the loop was blocked for).');
  var L = D.lag, stalls = D.stalls;
  if (!L.length && !stalls.length) { add(s, el('p', 'empty', 'No lag data: the lag monitor was off or the run was too short for a window.')); return; }
  var W = Math.max(400, s.clientWidth - 44), H = 210, PL = 56, PR = 46, PB = 22, PT = 10;
  var end = D.duration_us || 1;
  L.forEach(function (r) { if (r[1] > end) end = r[1]; });
  stalls.forEach(function (st) { if (st.t + st.dur > end) end = st.t + st.dur; });
  var maxMs = 0;
  L.forEach(function (r) { if (r[4] > maxMs) maxMs = r[4]; if (r[3] > maxMs) maxMs = r[3]; });
  stalls.forEach(function (st) { if (st.dur / 1000 > maxMs) maxMs = st.dur / 1000; });
  maxMs = maxMs > 0 ? maxMs * 1.1 : 1;
  function x(t) { return PL + t / end * (W - PL - PR); }
  function y(ms) { return PT + (1 - ms / maxMs) * (H - PT - PB); }
  function yElu(e) { return PT + (1 - e) * (H - PT - PB); }
  var svg = svgEl('svg', { width: W, height: H, role: 'img' });
  svg.appendChild(svgEl('line', { x1: PL, y1: H - PB, x2: W - PR, y2: H - PB, stroke: '#d0d5dd' }));
  svg.appendChild(svgEl('line', { x1: PL, y1: PT, x2: PL, y2: H - PB, stroke: '#d0d5dd' }));
  function label(text, attrs) { var t = svgEl('text', attrs); t.textContent = text; svg.appendChild(t); }
  [0, 0.5, 1].forEach(function (f) { label((maxMs * f).toFixed(maxMs < 10 ? 2 : 1) + ' ms', { x: PL - 4, y: y(maxMs * f) + 4, 'text-anchor': 'end' }); });
  [0, 0.5, 1].forEach(function (f) { label(fmt(end * f), { x: x(end * f), y: H - 6, 'text-anchor': f === 0 ? 'start' : (f === 1 ? 'end' : 'middle') }); });
  var hasElu = L.some(function (r) { return r[5] !== null; });
  if (hasElu) {
    svg.appendChild(svgEl('line', { x1: W - PR, y1: PT, x2: W - PR, y2: H - PB, stroke: '#b7e4c7' }));
    [0, 0.5, 1].forEach(function (f) { label(Math.round(100 * f) + ' %', { x: W - PR + 4, y: yElu(f) + 4, 'class': 'elu' }); });
  }
  stalls.forEach(function (st) {
    var r = svgEl('rect', { x: x(st.t), y: PT, width: Math.max(2, x(st.t + st.dur) - x(st.t)), height: H - PT - PB, fill: 'rgba(217,45,32,0.14)' });
    var title = svgEl('title', {}); title.textContent = 'stall at ' + fmt(st.t) + ', ' + fmt(st.dur) + ' (' + st.cause + '): ' + st.culprit; r.appendChild(title);
    svg.appendChild(r);
  });
  // each window is a step: a flat segment from its start to its end
  function stepPath(col, scale) {
    var d = '', prevEnd = null;
    L.forEach(function (r) {
      if (r[col] === null) { prevEnd = null; return; }
      var a = x(r[0]).toFixed(1), b = x(r[1]).toFixed(1), v = scale(r[col]).toFixed(1);
      d += (prevEnd !== null && Math.abs(prevEnd - r[0]) < 1e-6 * end + 1 ? 'L' : 'M') + a + ',' + v + 'L' + b + ',' + v;
      prevEnd = r[1];
    });
    return d;
  }
  // p99 as a shaded area: the max line is drawn over it, so it stays visible where they are equal
  L.forEach(function (r) {
    if (r[3] === null) return;
    svg.appendChild(svgEl('rect', { x: x(r[0]), y: y(r[3]), width: Math.max(1, x(r[1]) - x(r[0])), height: Math.max(0, H - PB - y(r[3])), fill: 'rgba(46,91,255,0.22)' }));
  });
  var d99 = stepPath(3, y);
  if (d99) svg.appendChild(svgEl('path', { d: d99, fill: 'none', stroke: '#2e5bff', 'stroke-width': 1.5 }));
  if (hasElu) { var de = stepPath(5, yElu); if (de) svg.appendChild(svgEl('path', { d: de, fill: 'none', stroke: '#12b76a', 'stroke-width': 1.5, 'stroke-dasharray': '5 3' })); }
  var dmax = stepPath(4, y);
  if (dmax) svg.appendChild(svgEl('path', { d: dmax, fill: 'none', stroke: '#f79009', 'stroke-width': 2, 'stroke-dasharray': '1 0' }));
  L.forEach(function (r) { if (r[4] !== null) svg.appendChild(svgEl('circle', { cx: x((r[0] + r[1]) / 2), cy: y(r[4]), r: 2.5, fill: '#f79009' })); });
  stalls.forEach(function (st) {
    var m = svgEl('circle', { cx: x(st.t + st.dur / 2), cy: y(st.dur / 1000), r: 4, fill: '#d92d20', stroke: '#fff', 'stroke-width': 1 });
    var title = svgEl('title', {}); title.textContent = 'stall at ' + fmt(st.t) + ': blocked ' + fmt(st.dur) + ' (' + st.cause + ') at ' + st.culprit + (st.episode ? '\n' + st.episode : ''); m.appendChild(title);
    svg.appendChild(m);
  });
  L.forEach(function (r) {
    var hit = svgEl('rect', { x: x(r[0]), y: PT, width: Math.max(2, x(r[1]) - x(r[0])), height: 8, fill: 'transparent' });
    var title = svgEl('title', {});
    title.textContent = fmt(r[0]) + ' – ' + fmt(r[1]) + ': lag p50 ' + r[2] + ' ms, p99 ' + r[3] + ' ms, max ' + r[4] + ' ms' + (r[5] !== null ? ', ELU ' + Math.round(100 * r[5]) + '%' : '');
    hit.appendChild(title); svg.appendChild(hit);
  });
  var legend = el('div', 'legend');
  [['rgba(46,91,255,0.5)', 'p99 lag (left axis)'], ['#f79009', 'max lag (left axis)'], hasElu ? ['#12b76a', 'ELU (right axis, dashed)'] : null, ['#d92d20', 'stall (time blocked, left axis)']].forEach(function (p) {
    if (!p) return; var k = el('i'); k.style.background = p[0]; legend.appendChild(k); legend.appendChild(document.createTextNode(p[1]));
  });
  add(s, svg, legend);
  if (!L.length) add(s, el('p', 'hint', 'No lag windows were recorded; only stalls are shown.'));
  else add(s, el('p', 'hint', L.length + ' lag window' + (L.length === 1 ? '' : 's') + ' (median window ' + fmt(D.lag_window_us) + ')' + (stalls.length ? '; ' + stalls.length + ' stall' + (stalls.length === 1 ? '' : 's') + ' marked where ' + (stalls.length === 1 ? 'it' : 'they') + ' happened' : '') + '.'));
}

// ------------------------------------------------------------------ tables
function table(parent, heads, rows, cell) {
  var t = el('table'), tr = el('tr');
  heads.forEach(function (h) { tr.appendChild(el('th', null, h)); });
  add(t, add(el('thead'), tr));
  var body = el('tbody');
  rows.forEach(function (r) { var row = el('tr'); cell(r).forEach(function (c) { row.appendChild(c); }); body.appendChild(row); });
  t.appendChild(body); parent.appendChild(t);
}
function td(text, cls) { return el('td', cls, text); }
// the program's frames; the full stack (runpy, asyncio, packages) one click further
function frames(parent, stack, full) {
  if (stack.length) parent.appendChild(el('pre', null, stack.join('\n')));
  if (full && full.length > stack.length) {
    var d = el('details', 'full'); d.appendChild(el('summary', null, 'full stack (' + full.length + ' frames, with the standard library and packages)'));
    d.appendChild(el('pre', null, full.join('\n'))); parent.appendChild(d);
  }
}
function stackCell(r, prefix) {
  var stack = r[prefix] || [], full = r[prefix + '_full'], astack = r.astack || [], c = el('td');
  if (prefix !== 'stack') astack = [];
  if (!stack.length && !(full && full.length) && !astack.length) { c.textContent = '-'; return c; }
  var d = el('details'), sm = el('summary', null, (stack.length ? stack.length + ' frames' : 'stack') + (astack.length ? ' + async stack' : ''));
  d.appendChild(sm);
  frames(d, stack, full);
  if (astack.length) { d.appendChild(el('div', 'hint', 'async stack (awaiting tasks):')); frames(d, astack, r.astack_full); }
  c.appendChild(d); return c;
}
function stallsTable() {
  var s = section('stalls', 'Event loop stalls', 'Times the loop was blocked longer than the threshold: the blocking line (culprit), what kind of block, and the task and span that were running. An episode is a blocked stretch made of shorter callbacks; its biggest parts are listed under the culprit.');
  if (!D.stalls.length) { add(s, el('p', 'empty', D.counts.stall === undefined ? 'No stalls recorded (or the lag monitor was off).' : 'No stalls.')); return; }
  table(s, ['at', 'blocked for', 'cause', 'culprit line', 'task', 'span', 'stack'], D.stalls, function (r) {
    var cause = el('td'); cause.appendChild(el('span', 'cause', r.cause));
    var culprit = el('td'); culprit.appendChild(el('code', null, r.culprit));
    if (r.episode) culprit.appendChild(el('div', 'hint', r.episode));
    return [td(fmt(r.t), 'num'), td(fmt(r.dur), 'num'), cause, culprit, td(r.task || '-'), td(r.span || '-'), stackCell(r, 'stack')];
  });
}
function leaksTable() {
  var s = section('leaks', 'Left open', 'Sockets, files, subprocesses, transports, tasks and threads still open when the session ended (or closed only by the garbage collector), with where they were opened. A connection is one row: its transport with the socket under it.');
  if (!D.leaks.length) { add(s, el('p', 'empty', 'Nothing was left open (or handle tracking was off).')); return; }
  table(s, ['kind', 'what', 'opened at', 'by span', 'opened', 'closed by', 'stack'], D.leaks, function (r) {
    var site = el('td'); site.appendChild(el('code', null, r.site));
    return [td(r.kind), td(r.desc), site, td(r.span || '-'), td(r.t === null ? '-' : fmt(r.t), 'num'), td(r.by || 'never'), stackCell(r, 'stack')];
  });
}
function findingsTable() {
  var s = section('findings', 'Findings', 'What tokio-console would warn about: tasks that can never be resumed (nothing holds the future they await), tasks that mostly woke themselves (busy-yield loops), asyncio locks, semaphores, events, conditions, queues and barriers tasks waited on (longest wait first), and queues whose depth kept growing.');
  if (!(D.findings || []).length) { add(s, el('p', 'empty', 'No findings.')); return; }
  table(s, ['finding', 'what', 'where', 'span', 'detail'], D.findings, function (r) {
    var where = el('td'); where.appendChild(el('code', null, r.where));
    return [td(r.kind), td(r.what), where, td(r.span || '-'), td(r.detail)];
  });
}
function summary() {
  var s = section('summary', 'Summary', 'The text summary python -m asynclens run prints (for a converted file, everything its records tell): slowest spans with their breakdown, where span time went, scheduling, GC, executor, I/O.');
  s.appendChild(el('pre', 'summary', D.summary));
}

try {
  tip = el('div'); tip.id = 'al-tip'; document.body.appendChild(tip);
  header(); timeline(); flame(); lagChart(); stallsTable(); leaksTable(); findingsTable(); summary();
  if (!document.body.hasAttribute('data-error')) document.body.setAttribute('data-rendered', 'ok');
} catch (e) {
  fail((e && e.message) || e);
}
})();
"""

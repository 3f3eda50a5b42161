/* Live network stats dashboard.
 *
 * Data: GET /api/state (snapshot) and GET /api/stream (Server-Sent Events:
 * state, node, block, best, signers, alarms). Every string that comes from
 * the network is written with textContent or setAttribute, never as HTML.
 */
(function () {
  'use strict';

  var MAX_BLOCKS = 100;
  var BEHIND_LIMIT = 2;
  var SVG_NS = 'http://www.w3.org/2000/svg';
  var PROP_BUCKETS = [
    { max: 10, label: '<10', range: 'under 10 ms' },
    { max: 25, label: '10', range: '10–25 ms' },
    { max: 50, label: '25', range: '25–50 ms' },
    { max: 100, label: '50', range: '50–100 ms' },
    { max: 250, label: '100', range: '100–250 ms' },
    { max: 500, label: '250', range: '250–500 ms' },
    { max: 1000, label: '500', range: '500–1000 ms' },
    { max: Infinity, label: '≥1k', range: '1 s or more' },
  ];

  // ---------------------------------------------------------------- state

  var S = {
    network: null,
    best: null,
    avg_block_time: null,
    gas_price: null,
    gas_limit: null,
    nodes: new Map(),
    blocks: [],
    signers: [],
    alarms: { fork: null, stall: null, rewritten: null },
    restart: null,
  };
  var stallSeenAt = 0; // client time (ms) when the current stall alarm arrived
  var snapshots = 0; // full snapshots applied from the stream
  var lastEventAt = 0;

  // ------------------------------------------------------------- helpers

  function $(id) { return document.getElementById(id); }

  function isNum(v) { return typeof v === 'number' && isFinite(v); }

  function str(v) { return v === null || v === undefined ? '' : String(v); }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVG_NS, tag);
    if (attrs) {
      for (var k in attrs) {
        if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, String(attrs[k]));
      }
    }
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function setText(node, text) {
    text = str(text);
    if (node.textContent !== text) node.textContent = text;
  }

  function setTitle(node, title) {
    if (title) {
      if (node.getAttribute('title') !== title) node.setAttribute('title', title);
    } else if (node.hasAttribute('title')) {
      node.removeAttribute('title');
    }
  }

  function setClass(node, cls) {
    cls = cls || '';
    if (node.className !== cls) node.className = cls;
  }

  var intFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

  function fmtInt(v) { return isNum(v) ? intFmt.format(v) : '—'; }

  function fmtFixed(v, digits) { return isNum(v) ? v.toFixed(digits) : '—'; }

  function fmtCompact(v) {
    if (!isNum(v)) return '—';
    var a = Math.abs(v);
    if (a >= 1e9) return trimZeros((v / 1e9).toFixed(1)) + 'G';
    if (a >= 1e6) return trimZeros((v / 1e6).toFixed(1)) + 'M';
    if (a >= 1e3) return trimZeros((v / 1e3).toFixed(1)) + 'k';
    if (a > 0 && a < 10 && Math.round(v) !== v) return trimZeros(v.toFixed(2));
    return String(Math.round(v));
  }

  function trimZeros(s) { return s.indexOf('.') >= 0 ? s.replace(/\.?0+$/, '') : s; }

  function fmtSeconds(v) {
    if (!isNum(v)) return '—';
    if (v >= 100) return Math.round(v) + ' s';
    return trimZeros(v.toFixed(2)) + ' s';
  }

  function humanDuration(s) {
    if (!isNum(s) || s < 0) return '—';
    s = Math.floor(s);
    if (s < 60) return s + 's';
    var m = Math.floor(s / 60);
    if (m < 60) return m + 'm ' + (s % 60) + 's';
    var h = Math.floor(m / 60);
    if (h < 24) return h + 'h ' + (m % 60) + 'm';
    var d = Math.floor(h / 24);
    return d + 'd ' + (h % 24) + 'h';
  }

  function shortHash(h) {
    h = str(h);
    if (h.length <= 16) return h || '—';
    return h.slice(0, 8) + '…' + h.slice(-6);
  }

  function shortAddr(a) {
    a = str(a);
    if (a.length <= 14) return a || '—';
    return a.slice(0, 6) + '…' + a.slice(-4);
  }

  function clock(ts) {
    if (!isNum(ts)) return '—';
    var d = new Date(ts * 1000);
    return pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds());
  }

  function isoTime(ts) {
    if (!isNum(ts)) return '';
    try { return new Date(ts * 1000).toISOString().replace('.000Z', 'Z'); } catch (e) { return ''; }
  }

  function pad2(n) { return n < 10 ? '0' + n : String(n); }

  function lower(a) { return str(a).toLowerCase(); }

  function shortClient(c) {
    c = str(c);
    if (!c) return '—';
    var parts = c.split('/');
    if (parts.length < 2) return c.length > 24 ? c.slice(0, 23) + '…' : c;
    var m = /^v?\d+(\.\d+)*/.exec(parts[1]);
    return parts[0] + ' ' + (m ? m[0] : parts[1]);
  }

  // Gas price in wei (decimal or 0x string, or number) -> [value, unit].
  function fmtGasPrice(p) {
    if (p === null || p === undefined || p === '') return ['—', ''];
    var wei;
    try {
      wei = typeof p === 'number' ? BigInt(Math.round(p)) : BigInt(String(p).trim());
    } catch (e) {
      return [String(p), ''];
    }
    var gwei = BigInt(1000000000);
    if (wei === BigInt(0)) return ['0', 'wei (zero-gas)'];
    if (wei < gwei) return [intFmt.format(Number(wei)), 'wei'];
    var g = Number(wei) / 1e9;
    return [trimZeros(g.toFixed(g < 10 ? 3 : 1)), 'gwei'];
  }

  function period() {
    var p = S.network && S.network.period;
    return isNum(p) && p > 0 ? p : null;
  }

  function nodeKey(n) { return str(n && (n.id !== undefined && n.id !== null ? n.id : n.name)); }

  function signerNames() {
    var m = new Map();
    S.nodes.forEach(function (n) {
      if (n && n.signer) m.set(lower(n.signer), str(n.name));
    });
    return m;
  }

  var collator = new Intl.Collator('en', { numeric: true, sensitivity: 'base' });

  // -------------------------------------------------- applying the data

  function applyState(s) {
    if (!s || typeof s !== 'object') return;
    S.network = s.network || null;
    S.best = s.best || null;
    S.avg_block_time = isNum(s.avg_block_time) ? s.avg_block_time : null;
    S.gas_price = s.gas_price !== undefined ? s.gas_price : null;
    S.gas_limit = isNum(s.gas_limit) ? s.gas_limit : null;
    S.nodes = new Map();
    (Array.isArray(s.nodes) ? s.nodes : []).forEach(function (n) {
      if (n && typeof n === 'object') S.nodes.set(nodeKey(n), n);
    });
    S.blocks = (Array.isArray(s.blocks) ? s.blocks : [])
      .filter(function (b) { return b && isNum(b.number); })
      .slice()
      .sort(function (a, b) { return b.number - a.number; })
      .slice(0, MAX_BLOCKS);
    S.signers = Array.isArray(s.signers) ? s.signers.filter(Boolean) : [];
    applyAlarms(s.alarms);
    applyRestart(s.restart);
    dirty.all = true;
    schedule();
  }

  function applyNode(n) {
    if (!n || typeof n !== 'object') return;
    var k = nodeKey(n);
    var prev = S.nodes.get(k);
    S.nodes.set(k, n);
    dirty.nodes.add(k);
    // Most updates are a new head: the header, the signer list and the
    // charts only show how many nodes are online and who signs.
    if (!prev || prev.name !== n.name) dirty.order = true;
    var named = !prev || prev.name !== n.name || prev.signer !== n.signer;
    if (named || prev.online !== n.online) dirty.stats = true;
    if (named) dirty.charts = true; // signer names in the sealer charts
    schedule();
  }

  function applyBlock(b) {
    if (!b || typeof b !== 'object' || !isNum(b.number)) return;
    var blocks = S.blocks.filter(function (x) {
      return x.number !== b.number && !(b.hash && x.hash === b.hash);
    });
    var i = 0;
    while (i < blocks.length && blocks[i].number > b.number) i++;
    blocks.splice(i, 0, b);
    S.blocks = blocks.slice(0, MAX_BLOCKS);
    if (!S.best || !isNum(S.best.number) || b.number > S.best.number) {
      S.best = { number: b.number, hash: b.hash, timestamp: b.timestamp, signer: b.signer };
      dirty.best = true;
    }
    dirty.blocks = true;
    dirty.charts = true;
    schedule();
  }

  function applyBest(d) {
    if (!d || typeof d !== 'object') return;
    if ('best' in d) S.best = d.best || null;
    if ('avg_block_time' in d) S.avg_block_time = isNum(d.avg_block_time) ? d.avg_block_time : null;
    dirty.best = true;
    schedule();
  }

  function applySigners(list) {
    S.signers = Array.isArray(list) ? list.filter(Boolean) : [];
    dirty.stats = true;
    dirty.charts = true;
    schedule();
  }

  function applyAlarms(a) {
    a = a && typeof a === 'object' ? a : {};
    var stall = a.stall || null;
    var prev = S.alarms.stall;
    if (stall && (!prev || prev.since !== stall.since || prev.seconds !== stall.seconds)) {
      stallSeenAt = Date.now();
    }
    S.alarms = { fork: a.fork || null, stall: stall, rewritten: a.history_rewritten || null };
    dirty.alarms = true;
    schedule();
  }

  // Rolling restart progress: rare changes, rendered at once (and every
  // second while a plan runs, for the time spent in the current phase).
  function applyRestart(r) {
    S.restart = r && typeof r === 'object' ? r : null;
    renderRestart();
  }

  function renderRestart() {
    var panel = $('restart-panel');
    var r = S.restart;
    if (!panel) return;
    if (!r || !Array.isArray(r.steps)) { panel.hidden = true; return; }
    panel.hidden = false;
    var steps = r.steps;
    var done = steps.filter(function (s) { return s && s.phase === 'done'; }).length;
    setText($('restart-title'), 'Rolling restart ' + r.id + ': ' + r.state + ' (' + done + '/' + steps.length + ')');
    var cur = steps[r.current];
    var detail = '';
    if (r.state === 'running' && cur) {
      var secs = isNum(cur.since_ms) ? Math.max(0, Math.round((Date.now() - cur.since_ms) / 1000)) : 0;
      detail = 'step ' + (r.current + 1) + ': ' + cur.node + ' ' + cur.phase + ' for ' + secs + ' s';
    } else if (r.reason) {
      detail = r.reason;
    }
    setText($('restart-detail'), detail);
    var list = $('restart-steps');
    while (list.firstChild) list.removeChild(list.firstChild);
    steps.forEach(function (s) {
      var li = document.createElement('li');
      var took = isNum(s.started_ms) && isNum(s.finished_ms) ? ' in ' + Math.round((s.finished_ms - s.started_ms) / 1000) + ' s' : '';
      var verdict = s.clean === true ? ', clean' : s.clean === false ? ', UNCLEAN' : '';
      li.textContent = s.node + ': ' + s.phase + took + verdict;
      li.className = 'restart-' + s.phase;
      list.appendChild(li);
    });
  }

  setInterval(function () {
    if (S.restart && S.restart.state === 'running') renderRestart();
  }, 1000);

  // ---------------------------------------------------------- rendering

  var dirty = { all: false, stats: false, best: false, order: false, nodes: new Set(), blocks: false, charts: false, alarms: false };
  var scheduled = false;

  function schedule() {
    if (scheduled) return;
    scheduled = true;
    // requestAnimationFrame is paused in hidden tabs; the timer keeps the
    // page current there too (flush runs once either way).
    if (window.requestAnimationFrame) window.requestAnimationFrame(flush);
    setTimeout(flush, 250);
  }

  function flush() {
    if (!scheduled) return;
    scheduled = false;
    var d = dirty;
    dirty = { all: false, stats: false, best: false, order: false, nodes: new Set(), blocks: false, charts: false, alarms: false };
    try {
      if (d.all || d.stats || d.best) renderStats();
      if (d.all || d.stats) renderSignerList();
      if (d.all || d.order || d.best) renderAllNodes(d.all || d.order);
      else if (d.nodes.size) renderNodes(d.nodes);
      if (d.all || d.alarms) renderAlarms();
      if (d.all || d.blocks || d.best) renderBlocks();
      if (d.all || d.charts || d.blocks) renderCharts();
      tick();
    } catch (e) {
      if (window.console) console.error(e);
    }
  }

  function renderStats() {
    var net = S.network || {};
    setText($('network-name'), net.name || 'network');
    setText($('chain-id'), 'chain ' + (isNum(net.chain_id) ? net.chain_id : '—'));
    var p = period();
    var per = $('period');
    if (p) { setText(per, 'period ' + p + ' s'); per.hidden = false; } else { per.hidden = true; }

    var best = S.best;
    var bestNum = best && isNum(best.number) ? best.number : null;
    setText($('best-block'), bestNum === null ? '—' : String(bestNum));
    var names = signerNames();
    var bs = $('best-signer');
    if (best && best.signer) {
      var nm = names.get(lower(best.signer));
      setText(bs, 'by ' + (nm || shortAddr(best.signer)));
      setTitle(bs, 'sealed by ' + str(best.signer) + (best.hash ? '\nhash ' + str(best.hash) : ''));
    } else {
      setText(bs, '');
      setTitle(bs, '');
    }

    setText($('avg-block-time'), fmtSeconds(S.avg_block_time));
    setText($('avg-block-sub'), p ? 'target ' + p + ' s' : '');

    var total = S.nodes.size;
    var online = 0;
    S.nodes.forEach(function (n) { if (n.online !== false) online++; });
    var an = $('active-nodes');
    setText(an, total ? online + '/' + total : '—');
    setClass(an, 'value' + (total && online < total ? ' warn' : ''));

    var gp = fmtGasPrice(S.gas_price);
    setText($('gas-price'), gp[0]);
    setText($('gas-price-sub'), gp[1]);
    setText($('gas-limit'), isNum(S.gas_limit) ? fmtCompact(S.gas_limit) : '—');
    setText($('gas-limit-sub'), isNum(S.gas_limit) ? fmtInt(S.gas_limit) + ' gas' : 'per block');
    setText($('signers-count'), S.signers.length ? String(S.signers.length) : '—');

    document.title = (bestNum !== null ? '#' + bestNum + ' · ' : '') + (net.name || 'Network') + ' stats';
  }

  // Block age and stall duration, every second.
  function tick() {
    var ageEl = $('block-age');
    var best = S.best;
    if (best && isNum(best.timestamp)) {
      var age = Math.max(0, Math.floor(Date.now() / 1000 - best.timestamp));
      setText(ageEl, humanDuration(age));
      var p = period() || 5;
      var cls = age > Math.max(60, 20 * p) ? 'bad' : age > 3 * p + 2 ? 'warn' : '';
      setClass(ageEl, cls);
    } else {
      setText(ageEl, '—');
      setClass(ageEl, '');
    }
    var stall = S.alarms.stall;
    if (stall) {
      var secs = isNum(stall.seconds) ? stall.seconds + (Date.now() - stallSeenAt) / 1000 : null;
      setText($('stall-duration'), secs === null ? 'a while' : humanDuration(secs));
    }
  }

  // ------------------------------------------------------------- nodes

  // The table shows one page of the nodes, sorted by name (and filtered by
  // name or id): a fleet of thousands would otherwise lay out thousands of
  // rows at every frame, and no one reads them all at once.
  var NODES_PER_PAGE = 100;
  var rows = new Map(); // node key -> { tr, c: cells }: the shown page only
  var nodeOrder = []; // keys of the nodes that pass the filter, sorted by name
  var nodesPage = 0;
  var nodesFilter = '';

  var NODE_COLS = ['name', 'client', 'latency', 'sealing', 'peers', 'pending', 'head', 'hash',
    'btime', 'prop', 'uptime', 'gate', 'shutdown', 'lost'];
  var LEFT_COLS = { name: 1, client: 1, sealing: 1, hash: 1, gate: 1, shutdown: 1 };

  function makeRow(k) {
    var tr = el('tr', 'node-row');
    var c = {};
    NODE_COLS.forEach(function (col) {
      var td = el('td');
      td.className = 'c-' + col + (LEFT_COLS[col] ? ' l' : '');
      c[col] = td;
      tr.appendChild(td);
    });
    c.head.className = 'node-head c-head';
    c.nameText = el('span', 'node-name');
    c.nameTag = el('span', 'tag');
    c.name.appendChild(c.nameText);
    c.name.appendChild(c.nameTag);
    c.badge = el('span', 'badge');
    c.sealing.appendChild(c.badge);
    c.gateText = el('span');
    c.gate.appendChild(c.gateText);
    c.shutText = el('span');
    c.shutdown.appendChild(c.shutText);
    var r = { tr: tr, c: c };
    rows.set(k, r);
    return r;
  }

  function updateRow(r, n) {
    var tr = r.tr;
    var c = r.c;
    var id = nodeKey(n);
    var name = str(n.name) || shortHash(id);
    if (tr.getAttribute('data-node-id') !== id) tr.setAttribute('data-node-id', id);
    if (tr.getAttribute('data-node-name') !== name) tr.setAttribute('data-node-name', name);

    var head = n.head && isNum(n.head.number) ? n.head.number : null;
    var bestNum = S.best && isNum(S.best.number) ? S.best.number : null;
    var lag = head !== null && bestNum !== null ? bestNum - head : 0;
    var behind = lag > BEHIND_LIMIT;
    var online = n.online !== false;
    setClass(tr, 'node-row' + (online ? '' : ' offline') + (behind ? ' behind' : ''));

    // name
    setText(c.nameText, name);
    setTitle(c.name, 'id ' + id + (n.source ? '\nreports via ' + str(n.source) : ''));
    var tag = !online ? 'offline' : n.source && n.source !== 'agent' ? str(n.source) : '';
    setText(c.nameTag, tag);
    setClass(c.nameTag, tag ? 'tag' + (!online ? ' tag-bad' : '') : 'tag hidden');

    // client
    setText(c.client, shortClient(n.client));
    setTitle(c.client, str(n.client));

    // latency
    setText(c.latency, isNum(n.latency_ms) ? Math.round(n.latency_ms) + ' ms' : '—');
    setClass(c.latency, 'c-latency' + (isNum(n.latency_ms) && n.latency_ms > 250 ? ' warn' : ''));

    // sealing
    var isSigner = n.is_signer === true || (n.is_signer !== false && !!n.signer);
    var label, bcls;
    if (isSigner && n.mining === true) { label = 'signer ✓ sealing'; bcls = 'badge ok'; }
    else if (isSigner) { label = 'signer, not sealing'; bcls = 'badge warn'; }
    else { label = 'validator'; bcls = 'badge muted'; }
    setText(c.badge, label);
    setClass(c.badge, bcls);
    setTitle(c.sealing, n.signer ? 'signer address ' + str(n.signer) : '');

    // peers, pending
    setText(c.peers, isNum(n.peers) ? String(n.peers) : '—');
    setClass(c.peers, 'c-peers' + (isNum(n.peers) && n.peers === 0 && online ? ' bad' : ''));
    setText(c.pending, isNum(n.pending) ? fmtInt(n.pending) : '—');

    // head
    setText(c.head, head === null ? '—' : String(head));
    setTitle(c.head, behind ? lag + ' blocks behind best #' + bestNum : '');
    setText(c.hash, n.head && n.head.hash ? shortAddr(n.head.hash) : '—');
    setTitle(c.hash, n.head && n.head.hash ? str(n.head.hash) : '');

    // block time, propagation, uptime
    setText(c.btime, fmtSeconds(n.block_time));
    setText(c.prop, isNum(n.propagation_ms) ? fmtInt(n.propagation_ms) + ' ms' : '—');
    setText(c.uptime, humanDuration(n.uptime_s));
    setTitle(c.uptime, isNum(n.uptime_s) ? fmtInt(n.uptime_s) + ' s' : '');

    // sync gate
    if (n.ready === true) {
      setText(c.gateText, 'ready ✓'); setClass(c.gateText, 'ok'); setTitle(c.gate, 'sync gate open');
    } else if (n.ready === false) {
      var reasons = Array.isArray(n.not_ready) ? n.not_ready.map(str).filter(Boolean) : [];
      setText(c.gateText, 'not ready'); setClass(c.gateText, 'bad');
      setTitle(c.gate, reasons.length ? reasons.join('\n') : 'not ready');
    } else {
      setText(c.gateText, '—'); setClass(c.gateText, 'muted'); setTitle(c.gate, '');
    }

    // last shutdown
    var sd = n.last_shutdown;
    if (sd && typeof sd === 'object') {
      var when = isNum(sd.at) ? ' (' + isoTime(sd.at) + ')' : '';
      if (sd.clean === false) {
        setText(c.shutText, 'UNCLEAN'); setClass(c.shutText, 'bad');
      } else {
        setText(c.shutText, 'clean ✓'); setClass(c.shutText, 'ok');
      }
      setTitle(c.shutdown, (str(sd.reason) || (sd.clean === false ? 'unclean stop' : 'clean stop')) + when);
    } else {
      setText(c.shutText, '—'); setClass(c.shutText, 'muted'); setTitle(c.shutdown, '');
    }

    // blocks lost
    setText(c.lost, isNum(n.blocks_lost) ? fmtInt(n.blocks_lost) : '—');
    setClass(c.lost, 'c-lost' + (isNum(n.blocks_lost) && n.blocks_lost > 0 ? ' bad' : ''));
  }

  function sortedKeys() {
    var keys = Array.from(S.nodes.keys()).filter(function (k) {
      return !nodesFilter || k.toLowerCase().indexOf(nodesFilter) >= 0 ||
        str(S.nodes.get(k).name).toLowerCase().indexOf(nodesFilter) >= 0;
    });
    keys.sort(function (a, b) {
      var na = str(S.nodes.get(a).name), nb = str(S.nodes.get(b).name);
      return collator.compare(na, nb) || collator.compare(a, b);
    });
    return keys;
  }

  // Shows the current page (after ordering the nodes again when one is new
  // or renamed, or the filter changed): its rows are created, updated and
  // placed; rows that left it are dropped.
  function renderAllNodes(reorder) {
    if (reorder) nodeOrder = sortedKeys();
    var pages = Math.max(1, Math.ceil(nodeOrder.length / NODES_PER_PAGE));
    nodesPage = Math.min(nodesPage, pages - 1);
    var from = nodesPage * NODES_PER_PAGE;
    var keys = nodeOrder.slice(from, from + NODES_PER_PAGE);
    var keep = new Set(keys);
    rows.forEach(function (r, k) {
      if (!keep.has(k)) { r.tr.remove(); rows.delete(k); }
    });
    var body = $('nodes-body');
    var prev = null;
    keys.forEach(function (k) {
      var n = S.nodes.get(k);
      var r = rows.get(k) || makeRow(k);
      updateRow(r, n);
      var want = prev ? prev.nextSibling : body.firstChild;
      if (r.tr !== want) body.insertBefore(r.tr, want);
      prev = r.tr;
    });
    renderPager(pages, from, keys.length);
    renderNodesSummary();
  }

  // Updates the rows of `keys` that are on the shown page.
  function renderNodes(keys) {
    keys.forEach(function (k) {
      var r = rows.get(k);
      var n = S.nodes.get(k);
      if (r && n) updateRow(r, n);
    });
    renderNodesSummary();
  }

  function renderPager(pages, from, count) {
    var total = S.nodes.size;
    $('nodes-empty').hidden = total > 0;
    $('nodes-no-match').hidden = total === 0 || nodeOrder.length > 0;
    $('nodes-filter-box').hidden = total <= NODES_PER_PAGE && nodesFilter === '';
    $('nodes-pager').hidden = pages <= 1;
    setText($('nodes-range'), count ? fmtInt(from + 1) + '–' + fmtInt(from + count) + ' of ' + fmtInt(nodeOrder.length) : '');
    $('nodes-prev').disabled = nodesPage === 0;
    $('nodes-next').disabled = nodesPage >= pages - 1;
  }

  function nodesControls() {
    $('nodes-prev').addEventListener('click', function () {
      nodesPage = Math.max(0, nodesPage - 1);
      renderAllNodes(false);
    });
    $('nodes-next').addEventListener('click', function () {
      nodesPage += 1; // renderAllNodes keeps it within the pages
      renderAllNodes(false);
    });
    $('nodes-filter').addEventListener('input', function (e) {
      nodesFilter = String(e.target.value || '').trim().toLowerCase();
      nodesPage = 0;
      renderAllNodes(true);
    });
  }

  function renderNodesSummary() {
    var bestNum = S.best && isNum(S.best.number) ? S.best.number : null;
    var behind = 0, signers = 0;
    S.nodes.forEach(function (n) {
      if (bestNum !== null && n.head && isNum(n.head.number) && bestNum - n.head.number > BEHIND_LIMIT) behind++;
      if (n.is_signer === true || (n.is_signer !== false && n.signer)) signers++;
    });
    var parts = [];
    if (S.nodes.size) parts.push(S.nodes.size + ' nodes', signers + ' signing');
    if (behind) parts.push(behind + ' behind');
    setText($('nodes-summary'), parts.join(' · '));
  }

  // ------------------------------------------------------------ alarms

  function renderAlarms() {
    var fork = S.alarms.fork;
    var fa = $('fork-alarm');
    if (fork && typeof fork === 'object') {
      setText($('fork-height'), isNum(fork.height) ? '#' + fork.height : '(unknown height)');
      var list = $('fork-hashes');
      var items = [];
      var hashes = fork.hashes && typeof fork.hashes === 'object' ? fork.hashes : {};
      Object.keys(hashes).forEach(function (h) {
        var li = el('li');
        var hs = el('span', 'hash', shortHash(h));
        hs.setAttribute('title', h);
        li.appendChild(hs);
        var who = Array.isArray(hashes[h]) ? hashes[h].map(str) : [];
        li.appendChild(el('span', 'who', who.length ? who.join(', ') : '—'));
        items.push(li);
      });
      list.replaceChildren.apply(list, items);
      fa.hidden = false;
    } else {
      fa.hidden = true;
    }

    var rw = S.alarms.rewritten;
    var ra = $('rewrite-alarm');
    if (rw && typeof rw === 'object') {
      setText($('rewrite-total'), isNum(rw.total) ? rw.total + ' block(s)' : 'unknown count');
      var rlist = $('rewrite-blocks');
      var blocks = Array.isArray(rw.blocks) ? rw.blocks : [];
      var ritems = blocks.map(function (b) {
        var li = el('li');
        li.appendChild(el('span', 'who', '#' + (isNum(b.height) ? b.height : '?') +
          (isNum(b.depth) ? ' (' + b.depth + ' deep)' : '')));
        var old = el('span', 'hash', shortHash(str(b.old_hash)));
        old.setAttribute('title', str(b.old_hash));
        li.appendChild(old);
        li.appendChild(el('span', 'who', '→'));
        var now = el('span', 'hash', shortHash(str(b.new_hash)));
        now.setAttribute('title', str(b.new_hash));
        li.appendChild(now);
        return li;
      });
      rlist.replaceChildren.apply(rlist, ritems);
      ra.hidden = false;
    } else {
      ra.hidden = true;
    }

    var stall = S.alarms.stall;
    var sa = $('stall-alarm');
    if (stall && typeof stall === 'object') {
      var detail = [];
      if (isNum(stall.since)) detail.push('no new head since ' + clock(stall.since));
      if (S.best && isNum(S.best.number)) detail.push('best block #' + S.best.number);
      setText($('stall-detail'), detail.join(' · '));
      setTitle($('stall-detail'), isNum(stall.since) ? isoTime(stall.since) : '');
      sa.hidden = false;
    } else {
      sa.hidden = true;
    }
    tick();
  }

  // ------------------------------------------------------------ blocks

  var blockRows = new Map(); // hash|number -> tr
  var BLOCKS_COLLAPSED = 20;
  var blocksExpanded = false;

  function blockKey(b) { return b.hash ? str(b.hash) : '#' + b.number; }

  function fillBlockRow(tr, b, names) {
    var cells = tr.children;
    setText(cells[0], String(b.number));
    setText(cells[1], shortHash(b.hash));
    setTitle(cells[1], str(b.hash));
    var sc = cells[2];
    var nm = b.signer ? names.get(lower(b.signer)) : null;
    setText(sc.firstChild, shortAddr(b.signer));
    setText(sc.children[1], nm || '');
    setText(sc.children[2], b.in_turn === false ? 'out of turn' : '');
    setClass(sc.children[2], b.in_turn === false ? 'tag tag-warn' : 'tag hidden');
    setTitle(sc, str(b.signer) + (b.in_turn === true ? '\nin turn' : b.in_turn === false ? '\nout of turn' : ''));
    setText(cells[3], isNum(b.txs) ? fmtInt(b.txs) : '—');
    setText(cells[4], isNum(b.gas_used) ? fmtInt(b.gas_used) : '—');
    setText(cells[5], fmtSeconds(b.block_time));
    var p = Array.isArray(b.propagation_ms) ? b.propagation_ms.filter(isNum) : [];
    setText(cells[6], p.length ? fmtInt(Math.max.apply(null, p)) + ' ms' : '—');
    setTitle(cells[6], p.length ? 'per node: ' + p.map(function (x) { return fmtInt(x); }).join(', ') + ' ms' : '');
    setText(cells[7], clock(b.timestamp));
    setTitle(cells[7], isoTime(b.timestamp));
  }

  function makeBlockRow() {
    var tr = el('tr', 'block-row');
    for (var i = 0; i < 8; i++) {
      var td = el('td');
      if (i === 1 || i === 2) td.className = 'l';
      tr.appendChild(td);
    }
    tr.children[1].classList.add('mono');
    var sc = tr.children[2];
    sc.appendChild(el('span', 'mono'));
    sc.appendChild(el('span', 'signer-name'));
    sc.appendChild(el('span', 'tag hidden'));
    return tr;
  }

  function renderBlocks() {
    var body = $('blocks-body');
    var names = signerNames();
    var keep = new Set();
    var prev = null;
    var shown = blocksExpanded ? S.blocks : S.blocks.slice(0, BLOCKS_COLLAPSED);
    shown.forEach(function (b) {
      var k = blockKey(b);
      keep.add(k);
      var tr = blockRows.get(k);
      if (!tr) { tr = makeBlockRow(); blockRows.set(k, tr); }
      fillBlockRow(tr, b, names);
      var want = prev ? prev.nextSibling : body.firstChild;
      if (tr !== want) body.insertBefore(tr, want);
      prev = tr;
    });
    blockRows.forEach(function (tr, k) {
      if (!keep.has(k)) { tr.remove(); blockRows.delete(k); }
    });
    $('blocks-empty').hidden = S.blocks.length > 0;
    var n = S.blocks.length;
    setText($('blocks-summary'), n ? 'showing ' + shown.length + ' of the last ' + n : '');
    var more = $('blocks-more');
    more.hidden = n <= BLOCKS_COLLAPSED;
    setText(more, blocksExpanded ? 'Show fewer' : 'Show all ' + n);
    more.setAttribute('aria-expanded', blocksExpanded ? 'true' : 'false');
  }

  // ------------------------------------------------------------ charts

  function niceMax(v) {
    if (!isNum(v) || v <= 0) return 1;
    var e = Math.pow(10, Math.floor(Math.log10(v)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * e >= v) return steps[i] * e;
    return 10 * e;
  }

  /* Vertical bar chart.
   * items: [{ value, title, cls }], opts: { fmt, xLabels: [left, right] | 'each',
   * labels: [per-bar label], ref: { value, label } } */
  function barChart(box, items, opts) {
    opts = opts || {};
    var W = Math.max(240, Math.floor(box.clientWidth || 300));
    var H = opts.height || 150;
    var padL = 40, padR = 8, padT = 10, padB = opts.labels ? 30 : 18;
    var plotW = W - padL - padR, plotH = H - padT - padB;
    var fmt = opts.fmt || fmtCompact;
    var root = svg('svg', { width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, class: 'bars', role: 'img' });
    if (opts.aria) root.setAttribute('aria-label', opts.aria);

    var values = items.map(function (it) { return isNum(it.value) ? it.value : 0; });
    var maxV = values.length ? Math.max.apply(null, values) : 0;
    if (opts.ref && isNum(opts.ref.value)) maxV = Math.max(maxV, opts.ref.value);
    var top = niceMax(maxV);

    // grid and y labels
    [0, 0.5, 1].forEach(function (f) {
      var y = padT + plotH - f * plotH;
      root.appendChild(svg('line', { x1: padL, x2: W - padR, y1: y, y2: y, class: f === 0 ? 'axis' : 'grid' }));
      root.appendChild(svg('text', { x: padL - 6, y: y + 3.5, class: 'ylabel', 'text-anchor': 'end' }, fmt(top * f)));
    });

    if (!items.length) {
      root.appendChild(svg('text', { x: padL + plotW / 2, y: padT + plotH / 2, class: 'nodata', 'text-anchor': 'middle' }, 'no data yet'));
      box.replaceChildren(root);
      return;
    }

    var slot = plotW / items.length;
    var gap = slot > 6 ? Math.min(slot * 0.2, 6) : slot > 2.5 ? 1 : 0;
    items.forEach(function (it, i) {
      var v = values[i];
      var h = top > 0 ? (v / top) * plotH : 0;
      if (v > 0 && h < 1) h = 1;
      var x = padL + i * slot + gap / 2;
      var g = svg('g');
      // full-height transparent hit area for the tooltip
      g.appendChild(svg('rect', { x: padL + i * slot, y: padT, width: Math.max(slot, 1), height: plotH, class: 'hit' }));
      g.appendChild(svg('rect', {
        x: x.toFixed(2), y: (padT + plotH - h).toFixed(2),
        width: Math.max(slot - gap, 0.8).toFixed(2), height: h.toFixed(2),
        class: 'bar' + (it.cls ? ' ' + it.cls : ''),
      }));
      if (it.title) g.appendChild(svg('title', null, it.title));
      root.appendChild(g);
      if (opts.labels) {
        root.appendChild(svg('text', { x: padL + i * slot + slot / 2, y: H - padB + 14, class: 'xlabel', 'text-anchor': 'middle' }, opts.labels[i]));
      }
    });

    if (opts.ref && isNum(opts.ref.value) && opts.ref.value > 0) {
      var ry = padT + plotH - (opts.ref.value / top) * plotH;
      root.appendChild(svg('line', { x1: padL, x2: W - padR, y1: ry, y2: ry, class: 'ref' }));
      root.appendChild(svg('text', { x: W - padR - 2, y: ry - 4, class: 'reflabel', 'text-anchor': 'end' }, opts.ref.label));
    }

    if (opts.xLabels) {
      root.appendChild(svg('text', { x: padL, y: H - 4, class: 'xlabel', 'text-anchor': 'start' }, opts.xLabels[0]));
      root.appendChild(svg('text', { x: W - padR, y: H - 4, class: 'xlabel', 'text-anchor': 'end' }, opts.xLabels[1]));
    }
    if (opts.axisNote) {
      root.appendChild(svg('text', { x: padL + plotW / 2, y: H - 4, class: 'xlabel', 'text-anchor': 'middle' }, opts.axisNote));
    }
    box.replaceChildren(root);
  }

  /* Horizontal bars in HTML: rows of { label, sub, title, value, text, cls }. */
  function hBars(box, rowsData, emptyText) {
    if (!rowsData.length) {
      box.replaceChildren(el('p', 'empty', emptyText || 'no data yet'));
      return;
    }
    var max = Math.max.apply(null, rowsData.map(function (r) { return isNum(r.value) ? r.value : 0; }));
    var out = rowsData.map(function (r) {
      var row = el('div', 'hbar');
      if (r.title) row.setAttribute('title', r.title);
      var lab = el('span', 'hbar-label');
      lab.appendChild(el('span', 'mono', r.label));
      if (r.sub) lab.appendChild(el('span', 'hbar-sub', r.sub));
      var track = el('span', 'hbar-track');
      var fill = el('span', 'hbar-fill' + (r.cls ? ' ' + r.cls : ''));
      var pct = max > 0 && isNum(r.value) ? (r.value / max) * 100 : 0;
      fill.style.width = pct.toFixed(1) + '%';
      track.appendChild(fill);
      row.appendChild(lab);
      row.appendChild(track);
      row.appendChild(el('span', 'hbar-value', r.text));
      return row;
    });
    box.replaceChildren.apply(box, out);
  }

  function renderCharts() {
    var chrono = S.blocks.slice().reverse(); // oldest first
    var n = chrono.length;
    var first = n ? '#' + chrono[0].number : '';
    var last = n ? '#' + chrono[n - 1].number : '';
    var p = period();

    barChart($('chart-blocktime'), chrono.map(function (b) {
      return {
        value: b.block_time,
        cls: b.in_turn === false ? 'alt' : '',
        title: '#' + b.number + ': ' + fmtSeconds(b.block_time) + (b.in_turn === false ? ' (out of turn)' : ''),
      };
    }), { fmt: function (v) { return trimZeros(v.toFixed(1)) + 's'; }, xLabels: [first, last], ref: p ? { value: p, label: 'period ' + p + ' s' } : null, aria: 'block time per block' });
    setText($('chart-blocktime-note'), n ? 'seconds, last ' + n : '');

    barChart($('chart-txs'), chrono.map(function (b) {
      return { value: b.txs, title: '#' + b.number + ': ' + (isNum(b.txs) ? fmtInt(b.txs) : '—') + ' txs' };
    }), { xLabels: [first, last], aria: 'transactions per block' });
    var txTotal = chrono.reduce(function (a, b) { return a + (isNum(b.txs) ? b.txs : 0); }, 0);
    setText($('chart-txs-note'), n ? fmtInt(txTotal) + ' txs in last ' + n : '');

    barChart($('chart-gas'), chrono.map(function (b) {
      return { value: b.gas_used, title: '#' + b.number + ': ' + fmtInt(b.gas_used) + ' gas' };
    }), { xLabels: [first, last], aria: 'gas used per block' });
    setText($('chart-gas-note'), isNum(S.gas_limit) ? 'limit ' + fmtCompact(S.gas_limit) : '');

    // propagation histogram
    var counts = PROP_BUCKETS.map(function () { return 0; });
    var samples = 0;
    chrono.forEach(function (b) {
      (Array.isArray(b.propagation_ms) ? b.propagation_ms : []).forEach(function (ms) {
        if (!isNum(ms)) return;
        samples++;
        for (var i = 0; i < PROP_BUCKETS.length; i++) {
          if (ms < PROP_BUCKETS[i].max) { counts[i]++; break; }
        }
      });
    });
    barChart($('chart-prop'), samples ? PROP_BUCKETS.map(function (bk, i) {
      return { value: counts[i], title: bk.range + ': ' + counts[i] + ' (' + Math.round((counts[i] / samples) * 100) + '%)' };
    }) : [], { labels: PROP_BUCKETS.map(function (bk) { return bk.label; }), aria: 'propagation histogram, milliseconds' });
    setText($('chart-prop-note'), samples ? 'arrivals by ms, ' + fmtInt(samples) + ' in all' : '');

    // sealer share over the recent blocks, every known signer listed
    var names = signerNames();
    var share = new Map();
    S.signers.forEach(function (s) { if (s && s.address) share.set(lower(s.address), 0); });
    chrono.forEach(function (b) {
      if (!b.signer) return;
      var k = lower(b.signer);
      share.set(k, (share.get(k) || 0) + 1);
    });
    var info = new Map();
    S.signers.forEach(function (s) { if (s && s.address) info.set(lower(s.address), s); });
    var addrs = Array.from(share.keys()).sort();
    hBars($('chart-share'), addrs.map(function (a) {
      var c = share.get(a);
      var s = info.get(a);
      var t = a;
      if (s && isNum(s.sealed)) t += '\nsealed in total: ' + fmtInt(s.sealed);
      if (s && isNum(s.last_sealed)) t += '\nlast sealed: #' + s.last_sealed;
      return {
        label: shortAddr(a), sub: names.get(a) || '', title: t, value: c,
        text: c + (n ? ' · ' + Math.round((c / n) * 100) + '%' : ''),
      };
    }), 'no signers yet');
    setText($('chart-share-note'), n ? 'blocks sealed, last ' + n : '');

    var missedTotal = 0;
    hBars($('chart-missed'), S.signers.filter(function (s) { return s && s.address; })
      .slice().sort(function (a, b) { return lower(a.address) < lower(b.address) ? -1 : 1; })
      .map(function (s) {
        var m = isNum(s.missed_turns) ? s.missed_turns : 0;
        missedTotal += m;
        return {
          label: shortAddr(s.address), sub: names.get(lower(s.address)) || '', value: m,
          text: isNum(s.missed_turns) ? fmtInt(s.missed_turns) : '—', cls: 'alt',
          title: str(s.address) + (isNum(s.sealed) ? '\nsealed: ' + fmtInt(s.sealed) : ''),
        };
      }), 'no signers yet');
    setText($('chart-missed-note'), S.signers.length ? fmtInt(missedTotal) + ' in total' : '');
  }

  // ---------------------------------------------------------- transport

  var es = null;
  var retryMs = 1000;
  var retryTimer = null;
  var live = 'connecting';

  function setLive(s) {
    live = s;
    var box = $('live');
    setClass(box, 'live is-' + s);
    setText($('live-text'), s);
    setTitle(box, s === 'live' ? 'receiving updates' : s === 'reconnecting' ? 'connection lost, retrying' : '');
  }

  function noteEvent() {
    lastEventAt = Date.now();
    if (live !== 'live') setLive('live');
    retryMs = 1000;
  }

  function handler(fn) {
    return function (ev) {
      var data;
      try { data = JSON.parse(ev.data); } catch (e) {
        if (window.console) console.warn('bad event data', ev.type, e);
        return;
      }
      noteEvent();
      fn(data);
    };
  }

  function connect() {
    if (retryTimer) { clearTimeout(retryTimer); retryTimer = null; }
    if (es) { try { es.close(); } catch (e) { /* ignore */ } }
    if (!window.EventSource) { setLive('reconnecting'); return; }
    es = new EventSource('/api/stream');
    es.onopen = function () { setLive('live'); retryMs = 1000; };
    es.onerror = function () {
      setLive('reconnecting');
      // The browser retries by itself unless the stream was refused (then
      // readyState is CLOSED): retry here with a growing delay.
      if (es.readyState === 2 && !retryTimer) {
        retryTimer = setTimeout(connect, retryMs);
        retryMs = Math.min(retryMs * 2, 30000);
      }
    };
    es.addEventListener('state', handler(function (d) { snapshots++; applyState(d); }));
    es.addEventListener('node', handler(applyNode));
    es.addEventListener('block', handler(applyBlock));
    es.addEventListener('best', handler(applyBest));
    es.addEventListener('signers', handler(applySigners));
    es.addEventListener('alarms', handler(applyAlarms));
    es.addEventListener('restart', handler(applyRestart));
  }

  function fetchState(always) {
    if (!window.fetch) return;
    fetch('/api/state', { cache: 'no-store' })
      .then(function (r) { if (!r.ok) throw new Error('HTTP ' + r.status); return r.json(); })
      .then(function (d) {
        // A snapshot from the stream is at least as fresh: only fill in
        // before it arrives, or while the stream is down.
        if (always || snapshots === 0 || live !== 'live') applyState(d);
      })
      .catch(function () { /* the stream or the next poll will fill in */ });
  }

  // ---------------------------------------------------------------- boot

  function boot() {
    renderStats();
    nodesControls();
    renderAllNodes(true);
    renderAlarms();
    renderBlocks();
    renderCharts();
    fetchState(false);
    connect();
    setInterval(function () {
      tick();
      var ts = lastEventAt ? 'updated ' + clock(lastEventAt / 1000) : '';
      setText($('updated'), ts);
    }, 1000);
    // While the stream is down, keep the numbers fresh by polling.
    setInterval(function () { if (live !== 'live') fetchState(true); }, 5000);

    $('blocks-more').addEventListener('click', function () {
      blocksExpanded = !blocksExpanded;
      renderBlocks();
    });

    var resizeTimer = null;
    var lastW = window.innerWidth;
    window.addEventListener('resize', function () {
      if (window.innerWidth === lastW) return;
      lastW = window.innerWidth;
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(renderCharts, 150);
    });
  }

  // ------------------------------------------------------------ signers

  // The signer set comes with the live state. The latest signer change
  // (GET /api/signers/latest) and the admitted nodes (GET /api/nodes) need
  // the admin token: they are polled only once the operator entered it. The
  // token lives in sessionStorage (gone with the tab), never in
  // localStorage or the URL.
  var TOKEN_KEY = 'aggregator-admin-token';
  var SIGNER_POLL_MS = 3000;
  var signerPoll = null;

  function renderSignerList() {
    var list = $('signer-list');
    if (!list) return;
    var names = signerNames();
    while (list.firstChild) list.removeChild(list.firstChild);
    S.signers.forEach(function (v) {
      var address = lower(v.address);
      var li = el('li', 'signer-row');
      li.setAttribute('data-address', address);
      li.appendChild(el('span', 'signer-name', names.get(address) || '—'));
      li.appendChild(el('span', 'mono', address));
      var sealed = isNum(v.sealed) ? v.sealed + ' sealed' : '';
      var missed = isNum(v.missed_turns) && v.missed_turns > 0 ? ', ' + v.missed_turns + ' missed turns' : '';
      li.appendChild(el('span', 'muted', sealed + missed));
      list.appendChild(li);
    });
    setText($('signers-summary'), S.signers.length ? S.signers.length + ' in the set' : 'set not known yet');
  }

  function adminToken() {
    try { return window.sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; }
  }

  function setAdminToken(t) {
    try {
      if (t) window.sessionStorage.setItem(TOKEN_KEY, t); else window.sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* storage disabled: the token is sent but not kept */ }
  }

  // An operator call: resolves to { status, body } (body parsed when JSON).
  function adminFetch(method, path, payload, token) {
    var init = { method: method, cache: 'no-store', headers: { Authorization: 'Bearer ' + token } };
    if (payload !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(payload);
    }
    return fetch(path, init).then(function (r) {
      return r.text().then(function (text) {
        var body = null;
        try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
        return { status: r.status, body: body, text: text };
      });
    });
  }

  function reasonOf(res) {
    var b = res.body;
    if (b && typeof b === 'object' && b.error !== undefined) return str(b.error);
    if (b && typeof b === 'object' && b.reason !== undefined) return str(b.reason);
    return str(res.text).slice(0, 300);
  }

  // Votes (clique_propose commands) answered by the agents this round.
  function planVotes(p) {
    var prefix = 'signers-' + p.id + '-' + p.round + '-propose-';
    return Object.keys(p.answered || {}).filter(function (id) { return id.indexOf(prefix) === 0; }).length;
  }

  function renderPlan(p) {
    var title = $('signer-change-title');
    var detail = $('signer-change-detail');
    var box = $('signer-change');
    if (!p) {
      setText(title, 'No signer change yet');
      setText(detail, '');
      setClass(box, 'signer-change');
      return;
    }
    var target = str(p.address) + (p.node ? ' (' + str(p.node) + ')' : '');
    setText(title, 'Signer change ' + str(p.id) + ': ' + str(p.action) + ' ' + target + ', ' + str(p.state));
    var parts = [];
    parts.push('phase ' + str(p.phase));
    if (isNum(p.votes_needed)) {
      var voters = Array.isArray(p.voters) ? p.voters.length : 0;
      parts.push('votes ' + planVotes(p) + ' of ' + voters + ' asked answered, ' + p.votes_needed + ' needed (round ' + str(p.round) + ')');
    }
    if (isNum(p.changed_at_block)) parts.push('changed at block ' + p.changed_at_block);
    if (p.reason) parts.push('error: ' + str(p.reason));
    var history = Array.isArray(p.history) ? p.history : [];
    var last = history.length ? history[history.length - 1] : null;
    if (last && last.text) parts.push('last: ' + str(last.text));
    setText(detail, parts.join(' · '));
    setClass(box, 'signer-change signer-' + str(p.state));
  }

  function renderAdmitted(list) {
    var ul = $('admitted-list');
    while (ul.firstChild) ul.removeChild(ul.firstChild);
    list.forEach(function (n) {
      var li = el('li', 'admitted-row');
      li.appendChild(el('span', 'signer-name', str(n && n.name)));
      li.appendChild(el('span', 'mono', str(n && n.address)));
      ul.appendChild(li);
    });
    if (!list.length) ul.appendChild(el('li', 'muted', 'none: only the nodes of network.json'));
    $('admitted').hidden = false;
  }

  function pollSigners() {
    var token = adminToken();
    if (!token) {
      setText($('signer-change-title'), 'Latest signer change: enter the admin token below to see it');
      setText($('signer-change-detail'), '');
      $('admitted').hidden = true;
      return;
    }
    adminFetch('GET', '/api/signers/latest', undefined, token).then(function (res) {
      if (res.status === 200) renderPlan(res.body);
      else if (res.status === 404) renderPlan(null);
      else {
        if (res.status === 401) setAdminToken('');
        setText($('signer-change-title'), 'Latest signer change: not shown (' + res.status + ')');
        setText($('signer-change-detail'), reasonOf(res));
      }
    }, function () {});
    adminFetch('GET', '/api/nodes', undefined, token).then(function (res) {
      if (res.status === 200 && Array.isArray(res.body)) renderAdmitted(res.body);
      else $('admitted').hidden = true;
    }, function () {});
  }

  function signerSubmit(ev) {
    ev.preventDefault();
    var typed = $('admin-token').value.trim();
    if (typed) setAdminToken(typed);
    $('admin-token').value = '';
    var token = adminToken();
    var action = $('signer-action').value;
    var target = $('signer-target').value.trim();
    var out = $('signer-result');
    if (!token) { setText(out, 'enter the admin token first'); setClass(out, 'signer-result bad'); return; }
    if (!target) { setText(out, 'name the node'); setClass(out, 'signer-result bad'); return; }
    var call = action === 'admit'
      ? adminFetch('POST', '/api/nodes/admit', { node: target }, token)
      : adminFetch('POST', '/api/signers', { action: action === 'remove' ? 'remove' : 'add', node: target }, token);
    setText(out, 'sending…');
    setClass(out, 'signer-result muted');
    $('signer-submit').disabled = true;
    call.then(function (res) {
      $('signer-submit').disabled = false;
      if (res.status === 401) setAdminToken('');
      if (res.status >= 200 && res.status < 300) {
        var b = res.body || {};
        var what = action === 'admit'
          ? 'admitted ' + str(b.address) + (b.name ? ' as ' + str(b.name) : '')
          : 'started signer change ' + str(b.id) + ': ' + str(b.action) + ' ' + str(b.address);
        setText(out, what);
        setClass(out, 'signer-result ok');
      } else {
        setText(out, 'refused (' + res.status + '): ' + reasonOf(res));
        setClass(out, 'signer-result bad');
      }
      pollSigners();
    }, function (e) {
      $('signer-submit').disabled = false;
      setText(out, 'not sent: ' + str(e && e.message ? e.message : e));
      setClass(out, 'signer-result bad');
    });
  }

  function signersSetup() {
    var form = $('signer-form');
    if (!form) return;
    form.addEventListener('submit', signerSubmit);
    $('admin-forget').addEventListener('click', function () {
      setAdminToken('');
      setText($('signer-result'), 'token forgotten');
      setClass($('signer-result'), 'signer-result muted');
      pollSigners();
    });
    pollSigners();
    if (!signerPoll) signerPoll = setInterval(pollSigners, SIGNER_POLL_MS);
  }

  // ------------------------------------------------------ add to wallet

  // GET /api/wallet gives the EIP-3085 parameters when the aggregator serves
  // the JSON-RPC gateway. With an injected wallet (EIP-1193 window.ethereum)
  // the button asks it to add the chain; otherwise it shows the values.
  function walletValues(p) {
    var fields = $('wallet-fields');
    while (fields.firstChild) fields.removeChild(fields.firstChild);
    var rows = [
      ['Network name', p.chainName],
      ['RPC URL', (p.rpcUrls || [])[0]],
      ['Chain ID', String(parseInt(p.chainId, 16))],
      ['Currency symbol', p.nativeCurrency && p.nativeCurrency.symbol],
    ];
    rows.forEach(function (r) {
      var dt = el('dt', null, r[0]);
      var dd = el('dd');
      var input = el('input');
      input.readOnly = true;
      input.value = str(r[1]);
      input.setAttribute('aria-label', r[0]);
      input.setAttribute('data-field', r[0]);
      var copy = el('button', 'copy', 'Copy');
      copy.type = 'button';
      copy.addEventListener('click', function () {
        input.select();
        if (navigator.clipboard && navigator.clipboard.writeText) {
          navigator.clipboard.writeText(input.value).then(function () { setText(copy, 'Copied'); }, function () {});
        }
      });
      dd.appendChild(input);
      dd.appendChild(copy);
      fields.appendChild(dt);
      fields.appendChild(dd);
    });
    $('wallet-values').hidden = false;
  }

  function walletSetup() {
    fetch('/api/wallet', { cache: 'no-store' })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (p) {
        if (!p || !p.chainId) return;
        $('wallet').hidden = false;
        $('wallet-add').addEventListener('click', function () {
          var eth = window.ethereum;
          var status = $('wallet-status');
          if (!eth || typeof eth.request !== 'function') {
            setText(status, '');
            walletValues(p);
            return;
          }
          setText(status, 'asking your wallet…');
          eth.request({ method: 'wallet_addEthereumChain', params: [p] }).then(function () {
            setText(status, 'added to your wallet');
          }, function (e) {
            setText(status, 'not added: ' + str(e && e.message ? e.message : e));
            walletValues(p);
          });
        });
      })
      .catch(function () {});
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', walletSetup); else walletSetup();
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', signersSetup); else signersSetup();
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();

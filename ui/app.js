/*
 * Hubble UI for Hypha: the namespace picker, the service map, the flow table and its
 * filters, kept live by one Server-Sent Events stream (/api/events) per view. The view
 * (namespace, selected edge or node) lives in the URL's hash, so a view can be linked.
 */
(() => {
  const MAX_ROWS = 500;
  const $ = (id) => document.getElementById(id);

  const state = {
    namespace: '',
    verdict: '',
    pod: '',
    text: '',
    /** {edge: id} or {node: id} or {} */
    selection: {},
    live: true,
  };
  let source;
  let map;
  let rows = [];
  let shownFlow;
  let generation = 0;

  // ---------------------------------------------------------------- view state

  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    state.namespace = p.get('namespace') || '';
    state.selection = p.get('edge') ? { edge: p.get('edge') } : p.get('node') ? { node: p.get('node') } : {};
  }

  function writeHash() {
    const p = new URLSearchParams();
    if (state.namespace) p.set('namespace', state.namespace);
    if (state.selection.edge) p.set('edge', state.selection.edge);
    if (state.selection.node) p.set('node', state.selection.node);
    const hash = p.toString();
    history.replaceState(null, '', hash ? `#${hash}` : location.pathname);
  }

  function query(limit = MAX_ROWS) {
    const p = new URLSearchParams();
    if (state.namespace) p.set('namespace', state.namespace);
    if (state.verdict) p.set('verdict', state.verdict);
    // Without a namespace, a bare pod name means any namespace ("/name"), not hubble's "default".
    if (state.pod) p.set('pod', state.namespace || state.pod.includes('/') ? state.pod : `/${state.pod}`);
    if (state.text) p.set('q', state.text);
    if (state.selection.edge) p.set('edge', state.selection.edge);
    if (state.selection.node) p.set('node', state.selection.node);
    p.set('limit', String(limit));
    return p.toString();
  }

  // ---------------------------------------------------------------- live stream

  /** Checks the filters with a plain request first: an EventSource cannot read a 400's message. */
  async function connect() {
    const my = ++generation;
    if (source) source.close();
    source = undefined;
    const check = await fetch(`/api/flows?${query(1)}`).catch((err) => ({ ok: false, err }));
    if (my !== generation) return;
    if (!check.ok) {
      const msg = check.json ? (await check.json()).error : String(check.err);
      showError(msg);
      rows = [];
      renderRows();
      return;
    }
    showError('');
    source = new EventSource(`/api/events?${query()}`);
    source.addEventListener('flows', (ev) => {
      if (my !== generation) return;
      const data = JSON.parse(ev.data);
      if (data.reset) rows = data.rows.reverse();
      else if (state.live) rows = data.rows.reverse().concat(rows);
      else return;
      if (rows.length > MAX_ROWS) rows.length = MAX_ROWS;
      renderRows();
    });
    source.addEventListener('map', (ev) => {
      if (my !== generation) return;
      map = JSON.parse(ev.data);
      renderNamespaces(map.namespaces);
      renderMap();
    });
    source.addEventListener('status', (ev) => renderStatus(JSON.parse(ev.data)));
    source.addEventListener('skipped', (ev) => {
      const n = JSON.parse(ev.data).flows;
      $('flow-count').dataset.skipped = String(n);
    });
    source.onerror = () => {
      if (my !== generation) return;
      $('status').dataset.state = 'offline';
      $('status').textContent = 'UI server unreachable; retrying…';
    };
  }

  function showError(msg) {
    const e = $('error');
    e.textContent = msg;
    e.hidden = !msg;
  }

  // ---------------------------------------------------------------- rendering

  function renderStatus(s) {
    const st = $('status');
    const relay = s.relay;
    if (!relay) {
      st.dataset.state = 'connected';
      st.textContent = 'no relay';
      return;
    }
    st.dataset.state = relay.state;
    const nodes = relay.nodes.filter((n) => n.state === 'NODE_CONNECTED').length;
    const lost = s.store.lost ? ` · ${s.store.lost} lost` : '';
    st.textContent =
      relay.state === 'connected'
        ? `relay ${relay.relay} · ${nodes}/${relay.nodes.length} nodes · ${s.store.seen} flows${lost}`
        : `relay ${relay.relay}: ${relay.state}${relay.error ? ` (${relay.error})` : ''}`;
  }

  function renderNamespaces(list) {
    const sel = $('namespace');
    const have = new Set([...sel.options].map((o) => o.value));
    const want = new Set(list);
    if (state.namespace) want.add(state.namespace);
    for (const ns of [...want].sort()) {
      if (have.has(ns)) continue;
      const o = document.createElement('option');
      o.value = ns;
      o.textContent = ns;
      // Keep the options sorted: insert before the first larger one.
      const after = [...sel.options].find((x) => x.value && x.value > ns);
      sel.insertBefore(o, after || null);
    }
    sel.value = state.namespace;
  }

  function renderMap() {
    const svg = $('map');
    if (!map) return;
    $('map-empty').hidden = map.edges.length > 0;
    window.HyphaMap.render(svg, map, state.selection, select);
    const t = map.totals;
    const totals = $('totals');
    totals.textContent = '';
    totals.dataset.flows = String(t.flows);
    totals.dataset.dropped = String(t.dropped);
    totals.append(`${map.nodes.length} services · ${t.flows} flows · `);
    const d = document.createElement('span');
    d.className = t.dropped ? 'dropped' : '';
    d.textContent = `${t.dropped} dropped`;
    totals.append(d);
    renderDetails();
  }

  function item(list, text) {
    const li = document.createElement('li');
    li.textContent = text;
    list.append(li);
  }

  function section(parent, title, entries) {
    if (!entries.length) return;
    const h = document.createElement('h3');
    h.textContent = title;
    const ul = document.createElement('ul');
    for (const e of entries) item(ul, e);
    parent.append(h, ul);
  }

  const policyText = (p) =>
    `${p.kind || 'policy'} ${p.namespace ? `${p.namespace}/` : ''}${p.name} (${p.direction}) · ${p.flows}`;

  function renderDetails() {
    const d = $('details');
    d.textContent = '';
    const h = document.createElement('h2');
    if (shownFlow) {
      h.textContent = 'Flow';
      const pre = document.createElement('pre');
      pre.textContent = JSON.stringify(shownFlow, null, 2);
      d.append(h, pre);
      return;
    }
    const sel = state.selection;
    const edge = sel.edge && map ? map.edges.find((e) => e.id === sel.edge) : undefined;
    const node = sel.node && map ? map.nodes.find((n) => n.id === sel.node) : undefined;
    if (edge) {
      d.dataset.selected = edge.id;
      h.textContent = `${nameOf(edge.source)} → ${nameOf(edge.target)}`;
      d.append(h, counts(edge.forwarded, edge.dropped, edge.flows));
      section(
        d,
        'Ports',
        edge.ports.map(
          (p) => `${p.port ? `${p.port}/` : ''}${p.protocol}: ${p.flows} flows, ${p.dropped} dropped`,
        ),
      );
      section(
        d,
        'Drop reasons',
        edge.dropReasons.map((r) => `${r.text} (${r.reason}) · ${r.flows}`),
      );
      section(d, 'Denied by', edge.deniedBy.map(policyText));
      section(d, 'Allowed by', edge.allowedBy.map(policyText));
      if (edge.l7) {
        const l = edge.l7;
        const http = Object.entries(l.http).map(([k, v]) => `HTTP ${k}: ${v}`);
        const lat =
          l.latencyAvgMs !== undefined ? [`latency avg ${l.latencyAvgMs} ms, max ${l.latencyMaxMs} ms`] : [];
        section(d, 'L7', [`${l.requests} requests, ${l.responses} responses`, ...http, ...lat]);
      }
      section(d, 'Last seen', [`${edge.lastVerdict} at ${edge.lastTime || '?'}`]);
    } else if (node) {
      d.dataset.selected = node.id;
      h.textContent = `${node.namespace ? `${node.namespace}/` : ''}${node.name}`;
      d.append(
        h,
        counts(
          node.flowsOut + node.flowsIn - node.droppedIn - node.droppedOut,
          node.droppedIn + node.droppedOut,
        ),
      );
      section(d, 'Kind', [node.kind]);
      section(d, 'Pods', node.pods);
      section(d, 'Services', node.services);
      section(d, 'Identities', node.identities.map(String));
      section(d, 'Flows', [
        `${node.flowsOut} out (${node.droppedOut} dropped)`,
        `${node.flowsIn} in (${node.droppedIn} dropped)`,
      ]);
    } else {
      delete d.dataset.selected;
      const p = document.createElement('p');
      p.className = 'hint';
      p.textContent = 'Click an edge or a service to see its flows; click a flow for all its fields.';
      d.append(p);
    }
  }

  function counts(forwarded, dropped, total) {
    const c = document.createElement('div');
    c.className = 'counts';
    const ok = document.createElement('span');
    ok.className = 'ok';
    ok.textContent = `✓ ${forwarded} forwarded`;
    const bad = document.createElement('span');
    bad.className = 'bad';
    bad.textContent = `✗ ${dropped} dropped`;
    c.append(ok, bad);
    if (total) {
      const rate = document.createElement('span');
      rate.textContent = `${Math.round((dropped / total) * 1000) / 10}% drop rate`;
      c.append(rate);
    }
    return c;
  }

  function nameOf(id) {
    const n = map?.nodes.find((x) => x.id === id);
    return n ? n.name : id;
  }

  function time(t) {
    const d = new Date(t);
    if (Number.isNaN(d.getTime())) return t;
    const ms = String(d.getMilliseconds()).padStart(3, '0');
    return `${d.toLocaleTimeString([], { hour12: false })}.${ms}`;
  }

  function cell(tr, cls, text, title) {
    const td = document.createElement('td');
    if (cls) td.className = cls;
    td.textContent = text || '';
    if (title) td.title = title;
    tr.append(td);
    return td;
  }

  function renderRows() {
    const body = $('flows').tBodies[0];
    body.textContent = '';
    for (const r of rows) {
      const tr = document.createElement('tr');
      tr.className = `verdict-${r.verdict}`;
      tr.dataset.uuid = r.uuid;
      tr.dataset.verdict = r.verdict;
      tr.dataset.edge = r.edge;
      tr.dataset.sourceNode = r.sourceNode;
      tr.dataset.destinationNode = r.destinationNode;
      if (shownFlow && shownFlow.uuid === r.uuid) tr.classList.add('selected');
      cell(tr, 'time', time(r.time), `${r.time} on ${r.node}`);
      cell(tr, 'ep', r.source);
      cell(tr, 'ep', r.destination);
      cell(tr, 'port', `${r.port ? `${r.port}/` : ''}${r.protocol}`);
      const v = cell(tr, 'verdict-cell', '');
      const badge = document.createElement('span');
      badge.className = `verdict ${r.verdict}`;
      badge.textContent = r.verdict;
      const type = document.createElement('small');
      type.textContent = r.type;
      v.append(badge, type);
      cell(tr, 'reason', r.dropReason ? r.dropReason.replace(/^[A-Z_]+: /, '') : '', r.dropReason);
      cell(tr, 'policy', r.policy);
      cell(tr, 'l7', r.l7);
      tr.addEventListener('click', () => showFlow(r.uuid));
      body.append(tr);
    }
    if (!rows.length) {
      const tr = document.createElement('tr');
      tr.className = 'empty';
      const td = document.createElement('td');
      td.colSpan = 8;
      td.textContent = 'No flows match.';
      tr.append(td);
      body.append(tr);
    }
    const count = $('flow-count');
    count.dataset.rows = String(rows.length);
    count.textContent = `${rows.length} flow${rows.length === 1 ? '' : 's'}`;
  }

  /** A flow's every field, from the server (the stream carries table rows only). */
  async function showFlow(uuid) {
    if (shownFlow && shownFlow.uuid === uuid) shownFlow = undefined;
    else {
      const r = await fetch(`/api/flows?uuid=${encodeURIComponent(uuid)}&limit=1`).then((x) => x.json());
      shownFlow = r.rows?.[0]?.flow || { uuid, error: 'no longer stored' };
    }
    renderRows();
    renderDetails();
  }

  function renderSelection() {
    const sel = state.selection;
    const chip = $('selection');
    chip.hidden = !sel.edge && !sel.node;
    if (sel.edge) {
      const e = map?.edges.find((x) => x.id === sel.edge);
      $('selection-label').textContent = e ? `${nameOf(e.source)} → ${nameOf(e.target)}` : sel.edge;
    } else if (sel.node) $('selection-label').textContent = nameOf(sel.node);
  }

  // ---------------------------------------------------------------- interaction

  function select(sel) {
    const same =
      (sel.edge && sel.edge === state.selection.edge) || (sel.node && sel.node === state.selection.node);
    state.selection = same ? {} : sel;
    shownFlow = undefined;
    writeHash();
    renderSelection();
    renderMap();
    connect();
  }

  function debounce(fn, ms) {
    let t;
    return () => {
      clearTimeout(t);
      t = setTimeout(fn, ms);
    };
  }

  function init() {
    readHash();
    $('namespace').addEventListener('change', (ev) => {
      state.namespace = ev.target.value;
      state.selection = {};
      shownFlow = undefined;
      writeHash();
      renderSelection();
      connect();
    });
    $('filter-verdict').addEventListener('change', (ev) => {
      state.verdict = ev.target.value;
      connect();
    });
    const typed = debounce(() => {
      state.pod = $('filter-pod').value.trim();
      state.text = $('filter-text').value.trim();
      connect();
    }, 300);
    $('filter-pod').addEventListener('input', typed);
    $('filter-text').addEventListener('input', typed);
    $('clear-selection').addEventListener('click', () => select({}));
    $('live').addEventListener('change', (ev) => {
      state.live = ev.target.checked;
    });
    $('map').addEventListener('click', () => {
      if (state.selection.edge || state.selection.node) select({});
    });
    window.addEventListener('hashchange', () => {
      readHash();
      renderSelection();
      connect();
    });
    fetch('/api/namespaces')
      .then((r) => r.json())
      .then((r) => renderNamespaces(r.namespaces || []))
      .catch(() => {});
    renderNamespaces([]);
    renderSelection();
    connect();
  }

  init();
})();

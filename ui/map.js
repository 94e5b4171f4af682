/*
 * The service map in SVG. The server lays the map out (src/ui/layout.ts); this draws it:
 * a card per node, a curve per edge with its forwarded and dropped counts, dropped edges
 * in red. Every node and edge carries data-* attributes (ids, kind, counts) for tests and
 * for the click handlers. Text from flows goes in through textContent only.
 */
(() => {
  const SVG = 'http://www.w3.org/2000/svg';
  /** The letter in a card's disc: the workload's initial; the colour tells the kind. */
  function badge(node) {
    if (node.kind === 'dns') return 'DNS';
    if (node.kind === 'world') return 'W';
    if (node.kind === 'unknown') return '?';
    return (node.name.match(/[a-z0-9]/i)?.[0] ?? '?').toUpperCase();
  }

  function el(name, attrs, parent) {
    const e = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (parent) parent.appendChild(e);
    return e;
  }

  function text(parent, attrs, content) {
    const t = el('text', attrs, parent);
    t.textContent = content;
    return t;
  }

  function clip(s, n) {
    return s.length > n ? `${s.slice(0, n - 1)}…` : s;
  }

  function subtitle(node) {
    const parts = [];
    if (node.namespace) parts.push(node.namespace);
    if (node.kind === 'workload' || node.kind === 'dns') {
      const n = node.pods.length;
      parts.push(`${n} pod${n === 1 ? '' : 's'}`);
    } else if (node.kind !== 'world') parts.push(node.kind);
    else parts.push('outside the cluster');
    return parts.join(' · ');
  }

  /** The SVG path of an edge's route (src/ui/layout.ts says where it runs). */
  function pathOf(route) {
    const p = route.points;
    if (route.shape === 'self') {
      const { x, y } = p[0];
      return `M ${x} ${y - 12} C ${x + 60} ${y - 50}, ${x + 60} ${y + 50}, ${x} ${y + 12}`;
    }
    if (route.shape === 'back') {
      const [a, b] = p;
      // Control points below the lane so that the curve's lowest point reaches it.
      const low = route.lane + (route.lane - Math.max(a.y, b.y)) / 3;
      return `M ${a.x} ${a.y} C ${a.x} ${low}, ${b.x} ${low}, ${b.x} ${b.y}`;
    }
    let d = `M ${p[0].x} ${p[0].y}`;
    for (let i = 1; i < p.length; i++) {
      const a = p[i - 1];
      const b = p[i];
      const dx = (b.x - a.x) / 2;
      d +=
        dx === 0 || a.y === b.y
          ? ` L ${b.x} ${b.y}`
          : ` C ${a.x + dx} ${a.y}, ${b.x - dx} ${b.y}, ${b.x} ${b.y}`;
    }
    return d;
  }

  function drawEdge(layer, labels, edge, route, selected, onSelect) {
    const cls = edge.dropped > 0 ? (edge.forwarded > 0 ? 'dropped mixed' : 'dropped') : 'forwarded';
    const g = el(
      'g',
      {
        class: `edge ${cls}${selected ? ' selected' : ''}`,
        'data-edge-id': edge.id,
        'data-source': edge.source,
        'data-target': edge.target,
        'data-forwarded': edge.forwarded,
        'data-dropped': edge.dropped,
        'data-flows': edge.flows,
        'data-verdict': edge.dropped > 0 ? 'dropped' : 'forwarded',
      },
      layer,
    );
    const d = pathOf(route);
    el('path', { class: 'hit', d }, g);
    el(
      'path',
      {
        class: 'line',
        d,
        'marker-end': `url(#${edge.dropped > 0 ? 'arrow-drop' : 'arrow'})`,
      },
      g,
    );
    const title = el('title', {}, g);
    title.textContent = `${edge.source} → ${edge.target}: ${edge.forwarded} forwarded, ${edge.dropped} dropped`;

    // The label is part of the edge (clicking it selects the edge) but drawn above the cards.
    const label = el(
      'g',
      {
        class: `edge-label ${cls}${selected ? ' selected' : ''}`,
        'data-label-of': edge.id,
      },
      labels,
    );
    const rect = el('rect', { rx: 9, ry: 9, height: 18 }, label);
    const t = el('text', { y: 4 }, label);
    const fwd = el('tspan', { class: 'fwd' }, t);
    fwd.textContent = `✓ ${edge.forwarded}`;
    const drp = el('tspan', { class: 'drp', dx: 8 }, t);
    drp.textContent = `✗ ${edge.dropped}`;
    if (edge.l7) {
      const l7 = el('tspan', { class: 'l7', dx: 8 }, t);
      const lat = edge.l7.latencyAvgMs !== undefined ? ` ${edge.l7.latencyAvgMs} ms` : '';
      l7.textContent = `L7 ${edge.l7.requests}${lat}`;
    }
    // Width from the text once it is in the document.
    const width = Math.max(54, t.getComputedTextLength() + 16);
    t.setAttribute('x', String(route.label.x - width / 2 + 8));
    rect.setAttribute('x', String(route.label.x - width / 2));
    rect.setAttribute('y', String(route.label.y - 9));
    rect.setAttribute('width', String(width));
    t.setAttribute('y', String(route.label.y + 4));
    const select = (ev) => {
      ev.stopPropagation();
      onSelect({ edge: edge.id });
    };
    g.addEventListener('click', select);
    label.addEventListener('click', select);
  }

  function drawNode(layer, node, box, selected, onSelect) {
    const drops = node.droppedIn + node.droppedOut;
    const g = el(
      'g',
      {
        class: `node kind-${node.kind}${selected ? ' selected' : ''}${drops > 0 ? ' has-drops' : ''}`,
        transform: `translate(${box.x} ${box.y})`,
        'data-node-id': node.id,
        'data-kind': node.kind,
        'data-name': node.name,
        'data-namespace': node.namespace || '',
      },
      layer,
    );
    el('rect', { class: 'box', width: box.w, height: box.h, rx: 8, ry: 8 }, g);
    el('circle', { class: 'kind-dot', cx: 22, cy: box.h / 2, r: 13 }, g);
    const letter = badge(node);
    text(g, { class: `badge${letter.length > 1 ? ' small' : ''}`, x: 22, y: box.h / 2 + 3.5 }, letter);
    text(g, { class: 'title', x: 44, y: box.h / 2 - 3 }, clip(node.name, 20));
    text(g, { class: 'subtitle', x: 44, y: box.h / 2 + 13 }, clip(subtitle(node), 26));
    const title = el('title', {}, g);
    title.textContent = `${node.kind} ${node.namespace ? `${node.namespace}/` : ''}${node.name}\n${node.flowsOut} flows out, ${node.flowsIn} in; ${drops} dropped`;
    g.addEventListener('click', (ev) => {
      ev.stopPropagation();
      onSelect({ node: node.id });
    });
  }

  function defs(svg) {
    const d = el('defs', {}, svg);
    for (const [id, color] of [
      ['arrow', '#8796a8'],
      ['arrow-drop', '#d93025'],
    ]) {
      const m = el(
        'marker',
        {
          id,
          viewBox: '0 0 10 10',
          refX: 9,
          refY: 5,
          // In pixels: a thicker (hovered, selected) line keeps the same arrow.
          markerUnits: 'userSpaceOnUse',
          markerWidth: 11,
          markerHeight: 11,
          orient: 'auto-start-reverse',
        },
        d,
      );
      el('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: color }, m);
    }
  }

  /**
   * Draws `map` (with its layout) into `svg`. `selection` is {edge} or {node} or {};
   * `onSelect` gets the same shape when an edge or node is clicked.
   */
  function render(svg, map, selection, onSelect) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const layout = map.layout;
    svg.setAttribute('width', String(layout.width));
    svg.setAttribute('height', String(layout.height));
    svg.setAttribute('viewBox', `0 0 ${layout.width} ${layout.height}`);
    svg.dataset.nodes = String(map.nodes.length);
    svg.dataset.edges = String(map.edges.length);
    svg.dataset.namespace = map.namespace;
    defs(svg);
    const edges = el('g', { class: 'edges' }, svg);
    const nodes = el('g', { class: 'nodes' }, svg);
    const labels = el('g', { class: 'labels' }, svg);
    for (const edge of map.edges) {
      const route = layout.edges[edge.id];
      if (route) drawEdge(edges, labels, edge, route, selection.edge === edge.id, onSelect);
    }
    for (const node of map.nodes) {
      const box = layout.nodes[node.id];
      if (box) drawNode(nodes, node, box, selection.node === node.id, onSelect);
    }
  }

  window.HyphaMap = { render };
})();

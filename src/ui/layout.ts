/**
 * A deterministic layered layout for the service map (after Sugiyama): clients to the
 * left of the services they call. Ranks are longest paths over the edges, cycles broken
 * at back edges found by a depth-first search in id order. An edge that spans several
 * ranks gets a slot in each rank it crosses, so it runs between cards, never under one,
 * and its label sits in that free slot. Within a rank, cards and slots are ordered by the
 * mean position of their neighbours (four alternating sweeps, ties by id). Back edges run
 * in lanes under the whole picture. The same map always gets the same picture.
 */
import type { MapEdge, MapNode } from './map.js';

export interface NodeBox {
  x: number;
  y: number;
  w: number;
  h: number;
  rank: number;
}

export interface Point {
  x: number;
  y: number;
}

/**
 * How to draw an edge. `forward`: through `points` left to right, each step a curve with
 * horizontal ends; `back`: from `points[0]` down to lane `lane` and up to `points[1]`;
 * `self`: a loop on the right of the card.
 */
export interface EdgeRoute {
  shape: 'forward' | 'back' | 'self';
  points: Point[];
  lane?: number;
  label: Point;
}

export interface MapLayout {
  width: number;
  height: number;
  nodes: Record<string, NodeBox>;
  edges: Record<string, EdgeRoute>;
}

export const NODE_W = 190;
export const NODE_H = 58;
/** A crossing edge's slot: room for its label. */
const SLOT_H = 26;
const GAP_X = 150;
const GAP_Y = 30;
const MARGIN = 30;
const LANE_GAP = 22;

const byId = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

type EdgeLike = Pick<MapEdge, 'id' | 'source' | 'target'>;

export function layoutMap(map: {
  nodes: readonly Pick<MapNode, 'id'>[];
  edges: readonly EdgeLike[];
}): MapLayout {
  const ids = map.nodes.map((n) => n.id).sort(byId);
  const known = new Set(ids);
  const edges = map.edges
    .filter((e) => known.has(e.source) && known.has(e.target))
    .sort((a, b) => byId(a.id, b.id));
  const out = new Map<string, string[]>(ids.map((id) => [id, []]));
  const inn = new Map<string, string[]>(ids.map((id) => [id, []]));
  for (const e of edges) {
    if (e.source === e.target) continue;
    out.get(e.source)!.push(e.target);
    inn.get(e.target)!.push(e.source);
  }

  // Back edges: those closing a cycle in a DFS that starts from sources, in id order.
  const back = new Set<string>();
  const state = new Map<string, 1 | 2>();
  const visit = (root: string) => {
    const stack: { id: string; i: number }[] = [{ id: root, i: 0 }];
    state.set(root, 1);
    while (stack.length) {
      const top = stack[stack.length - 1]!;
      const next = out.get(top.id)![top.i++];
      if (next === undefined) {
        state.set(top.id, 2);
        stack.pop();
      } else if (state.get(next) === 1) back.add(`${top.id}\n${next}`);
      else if (!state.has(next)) {
        state.set(next, 1);
        stack.push({ id: next, i: 0 });
      }
    }
  };
  for (const id of ids) if (inn.get(id)!.length === 0 && !state.has(id)) visit(id);
  for (const id of ids) if (!state.has(id)) visit(id);
  const isBack = (s: string, t: string) => back.has(`${s}\n${t}`);

  // Longest path from the sources over the remaining (acyclic) edges, in Kahn order.
  const rank = new Map<string, number>(ids.map((id) => [id, 0]));
  const pending = new Map<string, number>(
    ids.map((id) => [id, inn.get(id)!.filter((p) => !isBack(p, id)).length]),
  );
  const queue = ids.filter((id) => pending.get(id) === 0);
  while (queue.length) {
    const id = queue.shift()!;
    for (const next of out.get(id)!) {
      if (isBack(id, next)) continue;
      rank.set(next, Math.max(rank.get(next)!, rank.get(id)! + 1));
      const left = pending.get(next)! - 1;
      pending.set(next, left);
      if (left === 0) queue.push(next);
    }
  }

  // Slots for edges that cross ranks, chained like nodes for the ordering below.
  const slots = new Map<string, string[]>();
  const up = new Map<string, string[]>(ids.map((id) => [id, []]));
  const down = new Map<string, string[]>(ids.map((id) => [id, []]));
  const link = (a: string, b: string) => {
    down.get(a)!.push(b);
    up.get(b)!.push(a);
  };
  const columns: string[][] = [];
  const put = (id: string, r: number) => {
    columns[r] = [...(columns[r] ?? []), id];
  };
  for (const id of ids) put(id, rank.get(id)!);
  for (const e of edges) {
    if (e.source === e.target || isBack(e.source, e.target)) continue;
    const [rs, rt] = [rank.get(e.source)!, rank.get(e.target)!];
    let prev = e.source;
    const chain: string[] = [];
    for (let r = rs + 1; r < rt; r++) {
      const slot = `\0${e.id}\0${r}`;
      up.set(slot, []);
      down.set(slot, []);
      rank.set(slot, r);
      put(slot, r);
      link(prev, slot);
      chain.push(slot);
      prev = slot;
    }
    link(prev, e.target);
    slots.set(e.id, chain);
  }
  const dense = columns.filter((c) => c !== undefined);
  dense.forEach((col, r) => {
    for (const id of col) rank.set(id, r);
  });

  const pos = new Map<string, number>();
  const place = (col: string[]) => {
    for (const [i, id] of col.entries()) pos.set(id, i);
  };
  for (const col of dense) place(col);
  const sweep = (cols: string[][], neighbours: Map<string, string[]>) => {
    for (const col of cols) {
      const key = new Map(
        col.map((id) => {
          const ns = neighbours.get(id)!;
          const mean = ns.length ? ns.reduce((s, n) => s + pos.get(n)!, 0) / ns.length : pos.get(id)!;
          return [id, mean];
        }),
      );
      col.sort((a, b) => key.get(a)! - key.get(b)! || byId(a, b));
      place(col);
    }
  };
  for (let i = 0; i < 2; i++) {
    sweep(dense.slice(1), up);
    sweep(dense.slice(0, -1).reverse(), down);
  }

  // Coordinates: columns left to right, each stack centred on the tallest.
  const heightOf = (id: string) => (id.startsWith('\0') ? SLOT_H : NODE_H);
  const stack = (col: string[]) =>
    col.reduce((h, id) => h + heightOf(id), 0) + Math.max(0, col.length - 1) * GAP_Y;
  const tallest = Math.max(NODE_H, ...dense.map(stack));
  const boxes = new Map<string, NodeBox>();
  dense.forEach((col, r) => {
    let y = MARGIN + (tallest - stack(col)) / 2;
    for (const id of col) {
      boxes.set(id, { x: MARGIN + r * (NODE_W + GAP_X), y, w: NODE_W, h: heightOf(id), rank: r });
      y += heightOf(id) + GAP_Y;
    }
  });
  const bottom = MARGIN + tallest;
  const mid = (b: NodeBox) => b.y + b.h / 2;

  // Where each forward edge leaves and enters: spread over the card's side, in the order of
  // where the edges go, so that they do not start on top of each other.
  const forward = edges.filter((e) => e.source !== e.target && !isBack(e.source, e.target));
  const nextY = (e: EdgeLike) => {
    const first = slots.get(e.id)?.[0];
    return mid(boxes.get(first ?? e.target)!);
  };
  const prevY = (e: EdgeLike) => {
    const last = slots.get(e.id)?.at(-1);
    return mid(boxes.get(last ?? e.source)!);
  };
  const spread = (list: EdgeLike[], key: (e: EdgeLike) => number, box: NodeBox) => {
    const sorted = [...list].sort((a, b) => key(a) - key(b) || byId(a.id, b.id));
    const step = Math.min(12, (box.h * 0.6) / Math.max(1, sorted.length - 1));
    return new Map(sorted.map((e, i) => [e.id, mid(box) + (i - (sorted.length - 1) / 2) * step]));
  };
  const startY = new Map<string, number>();
  const endY = new Map<string, number>();
  for (const id of ids) {
    const box = boxes.get(id)!;
    for (const [k, y] of spread(
      forward.filter((e) => e.source === id),
      nextY,
      box,
    ))
      startY.set(k, y);
    for (const [k, y] of spread(
      forward.filter((e) => e.target === id),
      prevY,
      box,
    ))
      endY.set(k, y);
  }

  const routes: Record<string, EdgeRoute> = {};
  let lanes = 0;
  for (const e of edges) {
    const s = boxes.get(e.source)!;
    const t = boxes.get(e.target)!;
    if (e.source === e.target) {
      routes[e.id] = {
        shape: 'self',
        points: [{ x: s.x + s.w, y: mid(s) }],
        label: { x: s.x + s.w + 46, y: mid(s) },
      };
    } else if (isBack(e.source, e.target)) {
      const lane = bottom + LANE_GAP * ++lanes;
      const a = { x: s.x + s.w / 2, y: s.y + s.h };
      const b = { x: t.x + t.w / 2, y: t.y + t.h };
      routes[e.id] = { shape: 'back', points: [a, b], lane, label: { x: (a.x + b.x) / 2, y: lane } };
    } else {
      const chain = slots.get(e.id) ?? [];
      const points: Point[] = [{ x: s.x + s.w, y: startY.get(e.id)! }];
      for (const slot of chain) {
        const b = boxes.get(slot)!;
        points.push({ x: b.x, y: mid(b) }, { x: b.x + b.w, y: mid(b) });
      }
      points.push({ x: t.x, y: endY.get(e.id)! });
      const middle = chain.length ? boxes.get(chain[Math.floor((chain.length - 1) / 2)]!)! : undefined;
      const label = middle
        ? { x: middle.x + middle.w / 2, y: mid(middle) }
        : { x: (points[0]!.x + points[1]!.x) / 2, y: (points[0]!.y + points[1]!.y) / 2 };
      routes[e.id] = { shape: 'forward', points, label };
    }
  }

  const nodes: Record<string, NodeBox> = {};
  for (const id of ids) nodes[id] = boxes.get(id)!;
  const width = MARGIN * 2 + Math.max(1, dense.length) * NODE_W + Math.max(0, dense.length - 1) * GAP_X;
  const height = bottom + MARGIN + LANE_GAP * lanes;
  return { width, height, nodes, edges: routes };
}

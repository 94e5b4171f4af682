import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import { ValidationError } from '../../src/errors.js';
import {
  compileFilters,
  DEFAULT_RING_CAPACITY,
  type Flow,
  FlowRing,
  formatTimestamp,
  type RingEntry,
  toResponse,
  toRingQuery,
} from '../../src/hubble/index.js';

const T0 = 1_701_320_462_000_000_000n;
const SEC = 1_000_000_000n;

function flow(i: number, verdict: Flow['verdict'] = i % 2 ? 'DROPPED' : 'FORWARDED'): Flow {
  return { time: formatTimestamp(T0 + BigInt(i) * SEC), uuid: `f${i}`, verdict };
}

async function collect(it: AsyncIterable<RingEntry>): Promise<string[]> {
  const out: string[] = [];
  for await (const e of it) {
    out.push(
      'flow' in e.event
        ? e.event.flow.uuid!
        : `lost:${e.event.lost_events.source}:${e.event.lost_events.num_events_lost}`,
    );
  }
  return out;
}

test("capacity is Hubble's: 4095 by default, one less than a power of two", () => {
  assert.equal(DEFAULT_RING_CAPACITY, 4095);
  assert.equal(new FlowRing().capacity, 4095);
  for (const bad of [0, 4096, 1000, 131071]) assert.throws(() => new FlowRing(bad), ValidationError);
});

test('the ring keeps the newest events and counts what it saw', async () => {
  const r = new FlowRing(7);
  for (let i = 0; i < 10; i++) r.writeFlow(flow(i));
  assert.deepEqual(r.stats, { numFlows: 7, maxFlows: 7, seenFlows: 10 });
  assert.equal(r.oldestIndex, 3);
  assert.equal(r.at(2), undefined);
  assert.equal(r.at(9)?.ns, T0 + 9n * SEC);
  assert.deepEqual(await collect(r.read()), ['f3', 'f4', 'f5', 'f6', 'f7', 'f8', 'f9']);
});

test('last N counts matching flows, first N from the oldest, since/until select by time', async () => {
  const r = new FlowRing(15);
  for (let i = 0; i < 10; i++) r.writeFlow(flow(i));
  const dropped = compileFilters([{ verdict: ['DROPPED'] }]);
  assert.deepEqual(await collect(r.read({ number: 2, filter: dropped })), ['f7', 'f9']);
  assert.deepEqual(await collect(r.read({ number: 3, first: true, filter: dropped })), ['f1', 'f3', 'f5']);
  assert.deepEqual(await collect(r.read({ since: T0 + 7n * SEC })), ['f7', 'f8', 'f9']);
  assert.deepEqual(await collect(r.read({ since: T0 + 2n * SEC, until: T0 + 4n * SEC })), ['f2', 'f3', 'f4']);
  const q = toRingQuery({
    number: 1,
    first: false,
    follow: false,
    whitelist: [],
    blacklist: [{ verdict: ['DROPPED'] }],
    until: formatTimestamp(T0 + 5n * SEC),
  });
  assert.deepEqual(await collect(r.read(q)), ['f4']);
  assert.throws(
    () => toRingQuery({ number: 0, first: false, follow: false, whitelist: [], blacklist: [], since: 'now' }),
    (e: unknown) => e instanceof ValidationError && e.field === 'since',
  );
});

test('a follower gets new flows until aborted', async () => {
  const r = new FlowRing(7);
  r.writeFlow(flow(0));
  const ac = new AbortController();
  const got: string[] = [];
  const done = (async () => {
    for await (const e of r.read({ number: 1, follow: true, signal: ac.signal })) {
      if ('flow' in e.event) got.push(e.event.flow.uuid!);
      if (got.length === 3) ac.abort();
    }
  })();
  await tick();
  r.writeFlow(flow(1));
  await tick();
  r.writeFlow(flow(2));
  await done;
  assert.deepEqual(got, ['f0', 'f1', 'f2']);
});

test('a slow reader never holds the writer: it skips ahead and is told how many it lost', async () => {
  const r = new FlowRing(3);
  const it = r.read({ follow: true })[Symbol.asyncIterator]();
  r.writeFlow(flow(0));
  const first = await it.next();
  assert.ok(!first.done && 'flow' in first.value.event && first.value.event.flow.uuid === 'f0');
  // The reader is busy; the writer goes on, synchronously, lapping it.
  for (let i = 1; i <= 10; i++) r.writeFlow(flow(i));
  const seen: string[] = [];
  for (let i = 0; i < 4; i++) {
    const n = await it.next();
    assert.ok(!n.done);
    const e = n.value.event;
    seen.push('flow' in e ? e.flow.uuid! : `lost ${e.lost_events.source} ${e.lost_events.num_events_lost}`);
  }
  assert.deepEqual(seen, ['lost HUBBLE_RING_BUFFER 7', 'f8', 'f9', 'f10']);
  assert.equal(r.lost.HUBBLE_RING_BUFFER, 7);
  r.close();
  assert.deepEqual(await it.next(), { done: true, value: undefined });
});

test('datapath losses reported by the caller are counted and reach followers', async () => {
  const r = new FlowRing(7);
  const ac = new AbortController();
  const reading = collect(r.read({ follow: true, signal: ac.signal }));
  await tick();
  r.writeFlow(flow(0));
  r.reportLost('PERF_EVENT_RING_BUFFER', 42, 1);
  r.reportLost('PERF_EVENT_RING_BUFFER', 0);
  r.writeFlow(flow(1));
  await tick();
  ac.abort();
  assert.deepEqual(await reading, ['f0', 'lost:PERF_EVENT_RING_BUFFER:42', 'f1']);
  assert.equal(r.lost.PERF_EVENT_RING_BUFFER, 42);
  assert.equal(r.stats.seenFlows, 2);
  const res = toResponse(r.at(1)!, 'kind-worker');
  assert.deepEqual(res, {
    lost_events: { source: 'PERF_EVENT_RING_BUFFER', num_events_lost: '42', cpu: 1 },
    node_name: 'kind-worker',
    time: formatTimestamp(r.at(1)!.ns),
  });
  assert.deepEqual(toResponse(r.at(0)!, 'kind-worker'), {
    flow: flow(0),
    node_name: 'kind-worker',
    time: flow(0).time,
  });
});

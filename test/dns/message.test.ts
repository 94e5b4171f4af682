import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  DnsFormatError,
  type DnsMessage,
  decodeMessage,
  encodeForUdp,
  encodeMessage,
  query,
  RRType,
  responseTo,
} from '../../src/dns/message.js';

test('a query and a response round-trip, with name compression', () => {
  const q = query(0x1234, 'catalog.production.svc.cluster.local', RRType.A);
  const r = responseTo(q);
  r.answers.push(
    {
      name: 'catalog.production.svc.cluster.local',
      type: RRType.A,
      class: 1,
      ttl: 30,
      data: { kind: 'a', address: '10.96.0.10' },
    },
    {
      name: 'catalog.production.svc.cluster.local',
      type: RRType.AAAA,
      class: 1,
      ttl: 30,
      data: { kind: 'aaaa', address: 'fd00::a' },
    },
    {
      name: 'x.production.svc.cluster.local',
      type: RRType.CNAME,
      class: 1,
      ttl: 5,
      data: { kind: 'name', name: 'catalog.production.svc.cluster.local' },
    },
    {
      name: '_http._tcp.catalog.production.svc.cluster.local',
      type: RRType.SRV,
      class: 1,
      ttl: 5,
      data: {
        kind: 'srv',
        priority: 0,
        weight: 100,
        port: 8080,
        target: 'catalog.production.svc.cluster.local',
      },
    },
    {
      name: 'catalog.production.svc.cluster.local',
      type: RRType.TXT,
      class: 1,
      ttl: 5,
      data: { kind: 'txt', strings: ['hello', 'world'] },
    },
  );
  const wire = encodeMessage(r);
  const back = decodeMessage(wire);
  assert.deepEqual(back, r);
  // The repeated name is written once and pointed to afterwards.
  const uncompressed = r.answers.length * 'catalog.production.svc.cluster.local'.length;
  assert.ok(wire.length < uncompressed + 100, `${wire.length} bytes`);
});

test('IPv6 addresses are written and read in canonical form', () => {
  const r = responseTo(query(1, 'a.example', RRType.AAAA));
  for (const a of ['2001:db8::1', '::1', 'fe80::1:2:3:4', '2001:db8:0:1:1:1:1:1']) {
    r.answers = [
      { name: 'a.example', type: RRType.AAAA, class: 1, ttl: 1, data: { kind: 'aaaa', address: a } },
    ];
    assert.equal(addressesOf(decodeMessage(encodeMessage(r)))[0], a);
  }
});

test('malformed messages are DnsFormatErrors naming the problem', () => {
  const good = encodeMessage(query(7, 'api.external-partner.com', RRType.A));
  const cases: [string, Uint8Array, RegExp][] = [
    ['short header', good.subarray(0, 5), /truncated header/],
    ['truncated name', good.subarray(0, 20), /truncated question name/],
    [
      'counts beyond the message',
      Uint8Array.from([...good.subarray(0, 4), 0, 200, 0, 0, 0, 0, 0, 0]),
      /exceed/,
    ],
    [
      'pointer loop',
      Uint8Array.from([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]),
      /does not point backwards/,
    ],
    [
      'reserved label type',
      Uint8Array.from([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 1, 0, 1]),
      /reserved label/,
    ],
  ];
  for (const [what, bytes, re] of cases) {
    assert.throws(
      () => decodeMessage(bytes),
      (e: unknown) => e instanceof DnsFormatError && re.test(e.message),
      what,
    );
  }
  // An A record whose rdata is 5 bytes long.
  const r = responseTo(query(1, 'a.b', RRType.A));
  r.answers.push({
    name: 'a.b',
    type: RRType.A,
    class: 1,
    ttl: 1,
    data: { kind: 'raw', bytes: new Uint8Array(5) },
  });
  assert.throws(() => decodeMessage(encodeMessage(r)), /A rdata of 5 bytes/);
  assert.throws(() => encodeMessage(query(1, `${'x'.repeat(64)}.com`, RRType.A)), /label longer than 63/);
  assert.throws(() => encodeMessage(query(1, 'a..b', RRType.A)), /empty label/);
});

test('random bytes never crash the decoder', () => {
  let seed = 42;
  const rand = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed;
  };
  const base = encodeMessage(query(9, 'frontend.production.svc.cluster.local', RRType.A));
  for (let i = 0; i < 5000; i++) {
    const buf = Uint8Array.from(base);
    for (let k = 0; k < 1 + (rand() % 6); k++) buf[rand() % buf.length] = rand() & 0xff;
    try {
      decodeMessage(buf.subarray(0, rand() % (buf.length + 1)));
    } catch (e) {
      assert.ok(e instanceof DnsFormatError, String(e));
    }
  }
});

test('UDP responses over 512 bytes are truncated with TC set', () => {
  const r = responseTo(query(3, 'big.example', RRType.A));
  for (let i = 0; i < 60; i++) {
    r.answers.push({
      name: `host${i}.big.example`,
      type: RRType.A,
      class: 1,
      ttl: 1,
      data: { kind: 'a', address: `10.0.0.${i}` },
    });
  }
  const udp = encodeForUdp(r);
  assert.ok(udp.length <= 512);
  const back = decodeMessage(udp);
  assert.equal(back.tc, true);
  assert.ok(back.answers.length < 60 && back.answers.length > 0);
});

function addressesOf(m: DnsMessage): string[] {
  return m.answers.flatMap((a) => (a.data.kind === 'a' || a.data.kind === 'aaaa' ? [a.data.address] : []));
}

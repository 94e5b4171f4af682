import assert from 'node:assert/strict';
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import {
  type DnsMessage,
  decodeMessage,
  encodeMessage,
  query,
  RCode,
  RRType,
  responseTo,
} from '../../src/dns/message.js';
import { compileSelector } from '../../src/dns/pattern.js';
import { type DnsServer, startDnsServer } from '../../src/lab/dns/server.js';
import { Zone } from '../../src/lab/dns/zone.js';
import { type DnsAnswer, type DnsProxy, type DnsRecord, startDnsProxy } from '../../src/proxy/dns/proxy.js';
import { DnsRuleTable } from '../../src/proxy/dns/rules.js';
import { tcpQuery, udpExchange, udpQuery } from '../helpers/dns.js';

const udpAsk = (port: number, bytes: Uint8Array) => udpQuery(port, bytes, 3000);

/** An upstream that answers each query with whatever `reply` makes of it (undefined: silence). */
type Reply = (q: Buffer, s: Socket, from: RemoteInfo) => Uint8Array | undefined;

async function fakeUpstream(reply: Reply) {
  const s = createSocket('udp4');
  s.on('message', (m, r) => {
    const out = reply(m, s, r);
    if (out) s.send(out, r.port, r.address);
  });
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  return s;
}

/** A response to a query's bytes, with A records. */
function answerWith(q: Buffer, ...ips: string[]): DnsMessage {
  const m = decodeMessage(q);
  const r = responseTo(m);
  for (const ip of ips)
    r.answers.push({
      name: m.questions[0]!.name,
      type: RRType.A,
      class: 1,
      ttl: 7,
      data: { kind: 'a', address: ip },
    });
  return r;
}

describe('DNS proxy', () => {
  let upstream: DnsServer;
  let proxy: DnsProxy;
  const asked: string[] = []; // every name the real upstream was asked
  let upstreamPort = 0;
  const silent = createSocket('udp4'); // an upstream that never answers
  const records: DnsRecord[] = [];
  const learned: { answer: DnsAnswer; at: number }[] = [];
  let failPolicy = false;
  const fakes: Socket[] = [];

  before(async () => {
    upstream = await startDnsServer({
      host: '127.0.0.1',
      port: 0,
      zone: new Zone({
        domain: 'cluster.local',
        ttl: 60,
        services: [],
        hosts: [
          { name: 'api.external-partner.com', ip: '203.0.113.10' },
          { name: 'other-partner.example', ip: '203.0.113.20' },
        ],
      }),
      onQuery: (q) => asked.push(q.questions[0]?.name ?? ''),
    });
    upstreamPort = upstream.port;
    await new Promise<void>((r) => silent.bind(0, '127.0.0.1', r));
    // The tutorial's 5.4 rule set lets the data-exporter resolve anything ("*"); here the
    // dns rule allows one pattern, so refusals can be seen.
    const allows = compileSelector({ matchPattern: '*.external-partner.com' });
    proxy = await startDnsProxy('127.0.0.1', 0, {
      resolve: () => ({
        upstream: { host: '127.0.0.1', port: upstreamPort },
        allows,
        endpointId: 42,
        identity: 30001,
        upstreamIdentity: 40000,
        cookie: 3,
      }),
      onAnswer: async (a) => {
        if (failPolicy) throw new Error('policy map full');
        await new Promise((r) => setTimeout(r, 30));
        learned.push({ answer: a, at: Date.now() });
      },
      onRecord: (r) => records.push(r),
      upstreamTimeoutMs: 300,
      maxInFlight: 4,
    });
  });
  after(async () => {
    await proxy.close();
    await upstream.close();
    silent.close();
    for (const f of fakes) f.close();
  });
  /** Runs fn with the proxy's upstream swapped for `port`. */
  const via = async <T>(port: number, fn: () => Promise<T>): Promise<T> => {
    const saved = upstreamPort;
    upstreamPort = port;
    try {
      return await fn();
    } finally {
      upstreamPort = saved;
    }
  };
  const fake = async (reply: Reply) => {
    const s = await fakeUpstream(reply);
    fakes.push(s);
    return s.address().port;
  };

  test('an allowed name is forwarded, and policy learns the IPs before the pod gets them', async () => {
    const r = await udpAsk(proxy.port, encodeMessage(query(11, 'api.external-partner.com', RRType.A)));
    const receivedAt = Date.now();
    assert.equal(r?.rcode, RCode.NoError);
    assert.deepEqual(
      r?.answers.map((a) => (a.data.kind === 'a' ? a.data.address : '')),
      ['203.0.113.10'],
    );
    const l = learned.find((x) => x.answer.name === 'api.external-partner.com');
    assert.deepEqual(l?.answer, {
      endpointId: 42,
      name: 'api.external-partner.com',
      ips: ['203.0.113.10'],
      ttl: 60,
    });
    assert.ok(l && l.at <= receivedAt);
    const resp = records.find((x) => x.type === 'response' && x.name === 'api.external-partner.com');
    assert.equal(resp?.verdict, 'forwarded');
    assert.deepEqual(resp?.ips, ['203.0.113.10']);
    assert.deepEqual(resp?.rrtypes, ['A']);
    assert.deepEqual(resp?.destination, { ip: '127.0.0.1', port: upstream.port });
    assert.equal(resp?.cookie, 3);
    assert.equal(resp?.upstreamIdentity, 40000);
    assert.ok((resp?.latencyNs ?? 0) > 0);
  });

  test('other names are REFUSED, recorded, and never reach the server', async () => {
    const r = await udpAsk(proxy.port, encodeMessage(query(12, 'other-partner.example', RRType.A)));
    assert.equal(r?.rcode, RCode.Refused);
    assert.equal(r?.id, 12);
    const mine = records.filter((x) => x.name === 'other-partner.example');
    assert.deepEqual(
      mine.map((x) => [x.type, x.verdict, x.rcode]),
      [
        ['query', 'refused', RCode.Refused],
        ['response', 'refused', RCode.Refused],
      ],
    );
    assert.equal(mine[0]?.identity, 30001);
    assert.ok(!asked.includes('other-partner.example'));
    assert.ok(!learned.some((x) => x.answer.name === 'other-partner.example'));
  });

  test('malformed queries: FORMERR with a header, silence without one, never forwarded', async () => {
    const before = asked.length;
    const n = records.length;
    // A compression pointer that points forwards: undecodable, but the id is readable.
    const bad = Uint8Array.from([0, 13, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x20]);
    const r = await udpAsk(proxy.port, bad);
    assert.equal(r?.rcode, RCode.FormErr);
    assert.equal(r?.id, 13);
    // Shorter than a header: nothing to answer to.
    assert.equal(await udpExchange(proxy.port, Uint8Array.from([1, 2, 3]), 300), undefined);
    // Header counts that cannot fit.
    const lying = Uint8Array.from([0, 14, 1, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0]);
    assert.equal((await udpAsk(proxy.port, lying))?.rcode, RCode.FormErr);
    // Two questions, and a non-query opcode (UPDATE).
    const two = query(15, 'api.external-partner.com', RRType.A);
    two.questions.push({ name: 'x.external-partner.com', type: RRType.A, class: 1 });
    assert.equal((await udpAsk(proxy.port, encodeMessage(two)))?.rcode, RCode.FormErr);
    const update = { ...query(16, 'api.external-partner.com', RRType.A), opcode: 5 };
    assert.equal((await udpAsk(proxy.port, encodeMessage(update)))?.rcode, RCode.NotImp);
    // A response sent to the proxy: not answered (two servers must not loop).
    const resp = responseTo(query(17, 'api.external-partner.com', RRType.A));
    assert.equal(await udpExchange(proxy.port, encodeMessage(resp), 300), undefined);
    assert.equal(asked.length, before, 'none of these reached the server');
    const errors = records.slice(n).filter((x) => x.verdict === 'error');
    assert.ok(errors.length >= 6, `each is recorded (${errors.length})`);
    assert.ok(errors.some((x) => x.rcode === RCode.NotImp && /opcode 5/.test(x.reason ?? '')));
    // And the proxy still serves.
    const ok = await udpAsk(proxy.port, encodeMessage(query(18, 'api.external-partner.com', RRType.A)));
    assert.equal(ok?.answers.length, 1);
  });

  test('upstream failures: silence, a truncated answer, a spoofed or mismatched one -> SERVFAIL', async () => {
    const ask = (id: number) =>
      udpAsk(proxy.port, encodeMessage(query(id, 'api.external-partner.com', RRType.A)));
    const n = records.length;
    const silentPort = silent.address().port;
    assert.equal((await via(silentPort, () => ask(20)))?.rcode, RCode.ServFail);
    // The answer cut inside its A record.
    const cut = await fake((q) => encodeMessage(answerWith(q, '198.51.100.1')).slice(0, -3));
    assert.equal((await via(cut, () => ask(21)))?.rcode, RCode.ServFail);
    // An answer with another id, and one from another port: ignored, so the wait times out.
    const wrongId = await fake((q) => encodeMessage({ ...answerWith(q, '198.51.100.2'), id: 999 }));
    assert.equal((await via(wrongId, () => ask(22)))?.rcode, RCode.ServFail);
    // The right answer, but from another port than the one asked: an off-path spoofer's.
    const spoofer = createSocket('udp4');
    await new Promise<void>((r) => spoofer.bind(0, '127.0.0.1', r));
    fakes.push(spoofer);
    const offPath = await fake((q, _s, from) => {
      spoofer.send(encodeMessage(answerWith(q, '198.51.100.3')), from.port, from.address);
      return undefined;
    });
    assert.equal((await via(offPath, () => ask(23)))?.rcode, RCode.ServFail);
    // An answer to another question.
    const otherQ = await fake((q) => {
      const m = answerWith(q, '198.51.100.4');
      m.questions[0] = { name: 'evil.example', type: RRType.A, class: 1 };
      return encodeMessage(m);
    });
    assert.equal((await via(otherQ, () => ask(24)))?.rcode, RCode.ServFail);
    const fails = records.slice(n).filter((x) => x.type === 'response' && x.verdict === 'error');
    assert.equal(fails.length, 5);
    assert.ok(fails.every((x) => x.rcode === RCode.ServFail && x.reason));
    assert.ok(fails.some((x) => /did not answer/.test(x.reason ?? '')));
    assert.ok(fails.some((x) => /malformed upstream answer/.test(x.reason ?? '')));
    assert.ok(fails.some((x) => /does not match/.test(x.reason ?? '')));
    assert.ok(
      !learned.some((x) => x.answer.ips.some((ip) => ip.startsWith('198.51.100.'))),
      'nothing learned',
    );
  });

  test('a failed policy update answers SERVFAIL: the pod never gets IPs policy does not know', async () => {
    failPolicy = true;
    const f = await udpAsk(proxy.port, encodeMessage(query(30, 'api.external-partner.com', RRType.A)));
    failPolicy = false;
    assert.equal(f?.rcode, RCode.ServFail);
    assert.equal(f?.answers.length, 0);
    assert.ok(records.some((x) => x.verdict === 'error' && /policy update failed/.test(x.reason ?? '')));
  });

  test('an answer with TC set is relayed as it came (the client retries over TCP), byte for byte', async () => {
    // An unknown record type whose data holds a compressed name: relayed, not re-encoded.
    let sent: Uint8Array | undefined;
    const tc = await fake((q) => {
      const m = { ...answerWith(q, '192.0.2.77'), tc: true };
      const wire = encodeMessage(m);
      // Append a TYPE99 record pointing at the question name (offset 12).
      const extra = Uint8Array.from([0xc0, 12, 0, 99, 0, 1, 0, 0, 0, 9, 0, 2, 0xc0, 12]);
      const out = new Uint8Array(wire.length + extra.length);
      out.set(wire);
      out.set(extra, wire.length);
      out[7] = 2; // ancount
      sent = out;
      return out;
    });
    const raw = await via(tc, () =>
      udpExchange(proxy.port, encodeMessage(query(31, 'tc.external-partner.com', RRType.A)), 3000),
    );
    // As sent, but for the id: the proxy asks with its own and answers with the client's.
    const expected = Buffer.from(sent!);
    expected.writeUInt16BE(31, 0);
    assert.deepEqual(raw && Buffer.from(raw), expected);
    const m = decodeMessage(raw!);
    assert.equal(m.tc, true);
    const rec = records.find((x) => x.type === 'response' && x.name === 'tc.external-partner.com');
    assert.match(rec?.reason ?? '', /truncated/);
    assert.deepEqual(rec?.ips, ['192.0.2.77']);
  });

  test('more queries in flight than allowed: SERVFAIL, not an unbounded pile of sockets', async () => {
    const slow = await fake(() => undefined);
    const answers = await via(slow, () =>
      Promise.all(
        Array.from({ length: 6 }, (_, i) =>
          udpAsk(proxy.port, encodeMessage(query(40 + i, 'api.external-partner.com', RRType.A))),
        ),
      ),
    );
    assert.ok(answers.every((a) => a?.rcode === RCode.ServFail));
    assert.equal(records.filter((x) => /saturated/.test(x.reason ?? '')).length, 4); // query + response, twice
  });

  test('TCP queries go through the same rules; garbage on a TCP connection costs only that connection', async () => {
    const ask = (q: DnsMessage) => tcpQuery(proxy.port, q);
    assert.equal((await ask(query(51, 'api.external-partner.com', RRType.A))).answers.length, 1);
    assert.equal((await ask(query(52, 'other-partner.example', RRType.A))).rcode, RCode.Refused);
    const closed = await new Promise<boolean>((resolve) => {
      const s = connect(proxy.port, '127.0.0.1');
      s.on('close', () => resolve(true));
      s.on('error', () => {});
      s.write(Uint8Array.from([0, 3, 1, 2, 3])); // a 3-byte "message": no header
      setTimeout(() => resolve(false), 2000);
    });
    assert.ok(closed);
    assert.equal((await ask(query(53, 'api.external-partner.com', RRType.A))).answers.length, 1);
  });
});

describe('DNS rule lookup (the proxy picks the entry the datapath matched)', () => {
  const sel = (p: string) => [{ matchPattern: p }];
  const t = new DnsRuleTable([
    {
      id: 7,
      identity: 300,
      rules: [
        {
          identity: 0,
          protocol: 17,
          port: 53,
          portPrefixLen: 16,
          selectors: sel('*.any.example'),
          cookie: 1,
        },
        {
          identity: 500,
          protocol: 17,
          port: 53,
          portPrefixLen: 16,
          selectors: sel('*.dns.example'),
          cookie: 2,
        },
        { identity: 500, protocol: 0, port: 0, portPrefixLen: 0, selectors: sel('*'), cookie: 3 },
        {
          identity: 600,
          protocol: 6,
          port: 0,
          portPrefixLen: 0,
          selectors: [{ matchPattern: '**bad' }],
          cookie: 4,
        },
      ],
    },
  ]);
  test('exact identity beats any on the same port; longer port prefix beats protocol-only', () => {
    assert.equal(t.lookup(7, 500, 17, 53)?.cookie, 2);
    assert.equal(t.lookup(7, 501, 17, 53)?.cookie, 1);
    assert.equal(t.lookup(7, 500, 6, 53)?.cookie, 3);
    assert.equal(t.lookup(7, 501, 6, 53), undefined);
    assert.equal(t.lookup(8, 500, 17, 53), undefined);
  });
  test('names: the entry decides; an invalid selector allows nothing', () => {
    assert.equal(t.lookup(7, 500, 17, 53)?.allows('a.dns.example'), true);
    assert.equal(t.lookup(7, 500, 17, 53)?.allows('a.any.example'), false);
    assert.equal(t.lookup(7, 600, 6, 53)?.allows('bad'), false);
  });
});

import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { after, before, describe, test } from 'node:test';
import { type DnsMessage, encodeMessage, query, RCode, RRType } from '../../src/dns/message.js';
import { compileSelector } from '../../src/dns/pattern.js';
import { type DnsServer, startDnsServer } from '../../src/lab/dns/server.js';
import { Zone } from '../../src/lab/dns/zone.js';
import { type DnsAnswer, type DnsProxy, type DnsRecord, startDnsProxy } from '../../src/proxy/dns/proxy.js';
import { tcpQuery, udpQuery } from '../helpers/dns.js';

const udpAsk = (port: number, bytes: Uint8Array) => udpQuery(port, bytes, 3000);

describe('DNS proxy', () => {
  let upstream: DnsServer;
  let proxy: DnsProxy;
  let silentPort = 0;
  const silent = createSocket('udp4'); // an upstream that never answers
  const records: DnsRecord[] = [];
  const learned: { answer: DnsAnswer; at: number }[] = [];
  let failPolicy = false;
  let useSilent = false;

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
    });
    await new Promise<void>((r) => silent.bind(0, '127.0.0.1', r));
    silentPort = silent.address().port;
    // The tutorial's 5.4 rule set: the data-exporter may resolve anything ("*") but only
    // api.external-partner.com gets toFQDNs treatment; here the dns rule allows one pattern.
    const allows = compileSelector({ matchPattern: '*.external-partner.com' });
    proxy = await startDnsProxy('127.0.0.1', 0, {
      resolve: () => ({
        upstream: { host: '127.0.0.1', port: useSilent ? silentPort : upstream.port },
        allows,
        endpointId: 42,
        identity: 30001,
      }),
      onAnswer: async (a) => {
        if (failPolicy) throw new Error('policy map full');
        await new Promise((r) => setTimeout(r, 30));
        learned.push({ answer: a, at: Date.now() });
      },
      onRecord: (r) => records.push(r),
      upstreamTimeoutMs: 300,
    });
  });
  after(async () => {
    await proxy.close();
    await upstream.close();
    silent.close();
  });

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
  });

  test('other names are REFUSED and recorded', async () => {
    const r = await udpAsk(proxy.port, encodeMessage(query(12, 'other-partner.example', RRType.A)));
    assert.equal(r?.rcode, RCode.Refused);
    assert.equal(r?.id, 12);
    assert.ok(
      records.some(
        (x) => x.verdict === 'refused' && x.name === 'other-partner.example' && x.identity === 30001,
      ),
    );
    assert.ok(!learned.some((x) => x.answer.name === 'other-partner.example'));
  });

  test('malformed queries get FORMERR; a silent upstream SERVFAIL; a failed policy update SERVFAIL', async () => {
    const bad = Uint8Array.from([0, 13, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x20]);
    assert.equal((await udpAsk(proxy.port, bad))?.rcode, RCode.FormErr);
    useSilent = true;
    const t = await udpAsk(proxy.port, encodeMessage(query(14, 'api.external-partner.com', RRType.A)));
    useSilent = false;
    assert.equal(t?.rcode, RCode.ServFail);
    assert.ok(records.some((x) => x.verdict === 'error' && /did not answer/.test(x.reason ?? '')));
    failPolicy = true;
    const f = await udpAsk(proxy.port, encodeMessage(query(15, 'api.external-partner.com', RRType.A)));
    failPolicy = false;
    assert.equal(f?.rcode, RCode.ServFail);
  });

  test('TCP queries go through the same rules', async () => {
    const ask = (q: DnsMessage) => tcpQuery(proxy.port, q);
    assert.equal((await ask(query(21, 'api.external-partner.com', RRType.A))).answers.length, 1);
    assert.equal((await ask(query(22, 'other-partner.example', RRType.A))).rcode, RCode.Refused);
  });
});

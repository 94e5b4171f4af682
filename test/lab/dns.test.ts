import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  type DnsMessage,
  decodeMessage,
  encodeMessage,
  query,
  RCode,
  RRType,
} from '../../src/dns/message.js';
import { type DnsServer, startDnsServer } from '../../src/lab/dns/server.js';
import { Zone, type ZoneData } from '../../src/lab/dns/zone.js';
import { tcpQuery, udpExchange, udpQuery } from '../helpers/dns.js';

const data: ZoneData = {
  domain: 'cluster.local',
  ttl: 30,
  services: [
    { name: 'catalog', namespace: 'production', clusterIP: '10.96.12.7' },
    { name: 'kube-dns', namespace: 'kube-system', clusterIP: '10.96.0.10' },
    { name: 'db', namespace: 'production', clusterIP: 'None', headlessIPs: ['10.244.1.5', '10.244.2.9'] },
    { name: 'empty', namespace: 'production', clusterIP: 'None', headlessIPs: [] },
  ],
  hosts: [{ name: 'api.external-partner.com', ip: '203.0.113.10' }],
};

async function ask(port: number, name: string, type: number = RRType.A): Promise<DnsMessage> {
  const r = await udpQuery(port, encodeMessage(query(77, name, type)));
  assert.ok(r, `no answer for ${name}`);
  return r;
}

const udpAsk = (port: number, bytes: Uint8Array, timeoutMs = 500) => udpExchange(port, bytes, timeoutMs);
const tcpAsk = tcpQuery;

describe('lab cluster DNS', () => {
  let server: DnsServer;
  before(async () => {
    server = await startDnsServer({ host: '127.0.0.1', port: 0, zone: new Zone(data) });
  });
  after(() => server.close());

  test('services resolve to their ClusterIP, headless ones to pod IPs', async () => {
    const r = await ask(server.port, 'catalog.production.svc.cluster.local');
    assert.equal(r.rcode, RCode.NoError);
    assert.equal(r.aa, true);
    assert.deepEqual(addressesOf(r), ['10.96.12.7']);
    const h = await ask(server.port, 'DB.production.svc.cluster.local.');
    assert.deepEqual(addressesOf(h).sort(), ['10.244.1.5', '10.244.2.9']);
    assert.equal((await ask(server.port, 'empty.production.svc.cluster.local')).rcode, RCode.NoError);
  });

  test('pod names, world names, NXDOMAIN and NODATA', async () => {
    const p = await ask(server.port, '10-244-1-5.production.pod.cluster.local');
    assert.equal(addressesOf(p)[0], '10.244.1.5');
    const w = await ask(server.port, 'api.external-partner.com');
    assert.equal(addressesOf(w)[0], '203.0.113.10');
    assert.equal(w.aa, false);
    const nx = await ask(server.port, 'nope.production.svc.cluster.local');
    assert.equal(nx.rcode, RCode.NXDomain);
    assert.equal(nx.authorities[0]?.type, RRType.SOA);
    const nodata = await ask(server.port, 'catalog.production.svc.cluster.local', RRType.AAAA);
    assert.equal(nodata.rcode, RCode.NoError);
    assert.equal(nodata.answers.length, 0);
  });

  test('TCP works, and zone swaps apply at once', async () => {
    const r = await tcpAsk(server.port, query(5, 'kube-dns.kube-system.svc.cluster.local', RRType.A));
    assert.equal(addressesOf(r)[0], '10.96.0.10');
    server.setZone(
      new Zone({ ...data, services: [{ name: 'new', namespace: 'default', clusterIP: '10.96.1.1' }] }),
    );
    assert.equal((await ask(server.port, 'new.default.svc.cluster.local')).answers.length, 1);
    assert.equal((await ask(server.port, 'catalog.production.svc.cluster.local')).rcode, RCode.NXDomain);
    server.setZone(new Zone(data));
  });

  test('garbage gets FORMERR or silence, and the server keeps answering', async () => {
    const garbage = Uint8Array.from([0xab, 0xcd, 1, 0, 0, 5, 0, 0, 0, 0, 0, 0, 3, 0x61]);
    const r = await udpAsk(server.port, garbage);
    assert.ok(r);
    const m = decodeMessage(r);
    assert.equal(m.id, 0xabcd);
    assert.equal(m.rcode, RCode.FormErr);
    assert.equal(await udpAsk(server.port, Uint8Array.from([1, 2, 3]), 200), undefined);
    assert.equal((await ask(server.port, 'catalog.production.svc.cluster.local')).rcode, RCode.NoError);
  });
});

function addressesOf(m: DnsMessage): string[] {
  return m.answers.flatMap((a) => (a.data.kind === 'a' || a.data.kind === 'aaaa' ? [a.data.address] : []));
}

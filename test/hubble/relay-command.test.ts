/**
 * `hypha relay` as hubble-relay runs: peers from flags or a cluster's nodes, its own
 * listen address, TLS to the agents and to its clients (mutual where asked), flag errors.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, describe, it } from 'node:test';
import {
  type ChannelCredentials,
  credentials,
  type requestCallback,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import { relayCommands } from '../../src/cli/commands/relay.js';
import { UsageError } from '../../src/errors.js';
import {
  type GetFlowsResponsePB,
  type GetNodesResponsePB,
  type ObserverClient,
  observerClient,
} from '../../src/hubble/grpc/proto.js';
import { startObserverServer } from '../../src/hubble/grpc/server.js';
import { type Flow, FlowRing, formatTimestamp } from '../../src/hubble/index.js';

const dir = mkdtempSync(join(tmpdir(), 'hyhb-relaycmd-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const relay = relayCommands[0]!;

function flow(ms: number, node: string): Flow {
  return {
    time: formatTimestamp(BigInt(Date.now() - 10_000 + ms) * 1_000_000n),
    verdict: 'FORWARDED',
    node_name: node,
    event_type: { type: 4 },
    Summary: `${node}-${ms}`,
  };
}

/** Runs `hypha relay` with argv-like values until the returned stop is called. */
async function runRelay(values: Record<string, string | boolean | string[]>) {
  const out = new PassThrough();
  let text = '';
  out.on('data', (c: Buffer) => {
    text += c.toString();
  });
  const ac = new AbortController();
  const done = relay.run({ values, positionals: [], stdout: out, stderr: out, signal: ac.signal });
  for (let i = 0; i < 200 && !/Observer API on/.test(text); i++) await new Promise((r) => setTimeout(r, 10));
  const address = /Observer API on (\S+?),? /.exec(text)?.[1];
  assert.ok(address, text);
  return {
    address: address!,
    text: () => text,
    stop: async () => {
      ac.abort();
      assert.equal(await done, 0);
    },
  };
}

function all(c: ObserverClient): Promise<GetFlowsResponsePB[]> {
  return new Promise((resolve, reject) => {
    const out: GetFlowsResponsePB[] = [];
    const s = c.GetFlows({});
    s.on('data', (r: GetFlowsResponsePB) => out.push(r));
    s.on('error', reject);
    s.on('end', () => resolve(out));
  });
}

const nodes = (c: ObserverClient) =>
  new Promise<GetNodesResponsePB>((resolve, reject) =>
    c.GetNodes({}, { deadline: Date.now() + 5000 }, ((err, res) =>
      err ? reject(err) : resolve(res!)) as requestCallback<GetNodesResponsePB>),
  );

describe('hypha relay', () => {
  it('merges the peers given with --peer, on --listen-address', async () => {
    const ringA = new FlowRing(15);
    const ringB = new FlowRing(15);
    ringA.writeFlow(flow(1, 'node-a'));
    ringB.writeFlow(flow(2, 'node-b'));
    ringA.writeFlow(flow(3, 'node-a'));
    const a = await startObserverServer({
      ring: ringA,
      nodeName: 'node-a',
      listen: [`unix://${join(dir, 'a.sock')}`],
    });
    const b = await startObserverServer({
      ring: ringB,
      nodeName: 'node-b',
      listen: [`unix://${join(dir, 'b.sock')}`],
    });
    const r = await runRelay({
      'listen-address': '127.0.0.1:0',
      peer: [`node-a=unix://${join(dir, 'a.sock')}`, `node-b=unix://${join(dir, 'b.sock')}`],
      'sort-buffer-drain-timeout': '50ms',
    });
    const c = observerClient(r.address);
    try {
      assert.match(r.address, /^127\.0\.0\.1:\d+$/);
      const rs = await all(c);
      assert.deepEqual(
        rs.filter((x) => x.flow).map((x) => x.flow?.Summary),
        ['node-a-1', 'node-b-2', 'node-a-3'],
      );
      assert.deepEqual(
        (await nodes(c)).nodes?.map((n) => [n.name, n.state]),
        [
          ['node-a', 'NODE_CONNECTED'],
          ['node-b', 'NODE_CONNECTED'],
        ],
      );
    } finally {
      c.close();
      await r.stop();
      await a.close();
      await b.close();
    }
    assert.match(r.text(), /hypha relay: stopped/);
  });

  it('speaks TLS to the agents (with a client certificate) and to its clients (mutual)', async () => {
    const pki = certificates();
    const ring = new FlowRing(15);
    ring.writeFlow(flow(1, 'node-t'));
    // The agent wants a client certificate signed by the CA.
    const agent = await startObserverServer({
      ring,
      nodeName: 'node-t',
      listen: ['127.0.0.1:0'],
      tls: { cert: pki.read('server.crt'), key: pki.read('server.key'), ca: pki.read('ca.crt') },
    });
    const r = await runRelay({
      'listen-address': '127.0.0.1:0',
      peer: [`node-t=${agent.addresses[0]}`],
      'tls-hubble-server-ca-files': [pki.path('ca.crt')],
      'tls-client-cert-file': pki.path('client.crt'),
      'tls-client-key-file': pki.path('client.key'),
      'tls-relay-server-cert-file': pki.path('server.crt'),
      'tls-relay-server-key-file': pki.path('server.key'),
      'tls-relay-client-ca-files': [pki.path('ca.crt')],
    });
    const creds = (withCert: boolean): ChannelCredentials =>
      credentials.createSsl(
        pki.read('ca.crt'),
        withCert ? pki.read('client.key') : null,
        withCert ? pki.read('client.crt') : null,
      );
    const c = observerClient(r.address, creds(true));
    const anonymous = observerClient(r.address, creds(false));
    const plain = observerClient(r.address);
    try {
      assert.match(r.text(), /\(TLS\)/);
      const rs = await all(c);
      assert.deepEqual(
        rs.filter((x) => x.flow).map((x) => x.flow?.Summary),
        ['node-t-1'],
      );
      assert.deepEqual((await nodes(c)).nodes?.[0]?.tls, { enabled: true });
      for (const bad of [anonymous, plain])
        await assert.rejects(all(bad), (err: ServiceError) => err.code === status.UNAVAILABLE);
    } finally {
      for (const x of [c, anonymous, plain]) x.close();
      await r.stop();
      await agent.close();
    }
  });

  it("finds the agents as a cluster's nodes with --kubeconfig", async () => {
    const pki = certificates();
    const api = createServer({ cert: pki.read('server.crt'), key: pki.read('server.key') }, (req, res) => {
      assert.equal(req.url, '/api/v1/nodes');
      res.writeHead(200, { 'content-type': 'application/json' });
      const node = (name: string, ip: string) => ({
        metadata: { name },
        status: { addresses: [{ type: 'InternalIP', address: ip }] },
      });
      res.end(
        JSON.stringify({
          items: [node('kind-control-plane', '127.0.0.201'), node('kind-worker', '127.0.0.202')],
        }),
      );
    });
    await new Promise<void>((resolve) => api.listen(0, '127.0.0.1', resolve));
    const port = (api.address() as { port: number }).port;
    const kubeconfig = join(dir, 'kubeconfig');
    writeFileSync(
      kubeconfig,
      [
        'apiVersion: v1',
        'kind: Config',
        'clusters: [{name: c, cluster: {server: "https://127.0.0.1:' +
          port +
          '", certificate-authority: ' +
          pki.path('ca.crt') +
          '}}]',
        'users: [{name: u, user: {token: t}}]',
        'contexts: [{name: x, context: {cluster: c, user: u}}]',
        'current-context: x',
      ].join('\n'),
    );
    // Loopback addresses nothing listens on: the relay still names them, as unavailable.
    const r = await runRelay({ 'listen-address': '127.0.0.1:0', kubeconfig, 'dial-timeout': '200ms' });
    const c = observerClient(r.address);
    try {
      assert.match(
        r.text(),
        /peers: kind-control-plane=127\.0\.0\.201:4244, kind-worker=127\.0\.0\.202:4244/,
      );
      assert.deepEqual(
        (await nodes(c)).nodes?.map((n) => [n.name, n.address, n.state]),
        [
          ['kind-control-plane', '127.0.0.201:4244', 'NODE_UNAVAILABLE'],
          ['kind-worker', '127.0.0.202:4244', 'NODE_UNAVAILABLE'],
        ],
      );
    } finally {
      c.close();
      await r.stop();
      api.close();
    }
  });

  it('rejects flags it cannot act on, naming them', async () => {
    const pki = certificates();
    const cases: [Record<string, string | boolean | string[]>, RegExp][] = [
      [{}, /no peers: give --peer host:port/],
      [{ peer: ['a=10.0.0.1:99999'] }, /--peer: "10.0.0.1:99999" is not host:port/],
      [{ peer: ['x=10.0.0.1', 'x=10.0.0.2'] }, /peer x is given twice/],
      [{ peer: ['10.0.0.1'], 'dial-timeout': '5x' }, /--dial-timeout: "5x" is not a duration/],
      [
        { peer: ['10.0.0.1'], 'sort-buffer-len-max': '0' },
        /--sort-buffer-len-max: "0" is not a positive number/,
      ],
      [
        { peer: ['10.0.0.1'], 'tls-relay-client-ca-files': [pki.path('ca.crt')] },
        /needs --tls-relay-server-cert-file/,
      ],
      [{ peer: ['10.0.0.1'], 'tls-relay-server-cert-file': pki.path('server.crt') }, /go together/],
      [
        {
          peer: ['10.0.0.1'],
          'disable-server-tls': true,
          'tls-relay-server-cert-file': pki.path('server.crt'),
        },
        /--disable-server-tls conflicts/,
      ],
      [
        { peer: ['10.0.0.1'], 'tls-hubble-client-cert-file': pki.path('client.crt') },
        /needs --tls-hubble-server-ca-files/,
      ],
      [
        { peer: ['10.0.0.1'], 'tls-hubble-server-ca-files': ['/nonexistent/ca.crt'] },
        /--tls-hubble-server-ca-files \/nonexistent\/ca.crt: ENOENT/,
      ],
    ];
    for (const [values, re] of cases) {
      await assert.rejects(
        Promise.resolve().then(() =>
          relay.run({
            values,
            positionals: [],
            stdout: new PassThrough(),
            stderr: new PassThrough(),
            signal: new AbortController().signal,
          }),
        ),
        (err: Error) => err instanceof UsageError && re.test(err.message),
        re.source,
      );
    }
  });
});

let pkiDir: string | undefined;

/** A CA, a server certificate for localhost/127.0.0.1 and a client certificate, made once with openssl. */
function certificates() {
  const d = join(dir, 'pki');
  if (!pkiDir) {
    execFileSync('mkdir', ['-p', d]);
    const ossl = (...args: string[]) => execFileSync('openssl', args, { cwd: d, stdio: 'pipe' });
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    ossl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '1', '-subj', '/CN=hyhb-ca');
    for (const [name, ext] of [
      ['server', 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth'],
      ['client', 'extendedKeyUsage=clientAuth'],
    ] as const) {
      ossl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=hyhb-${name}`);
      writeFileSync(join(d, `${name}.ext`), `${ext}\n`);
      ossl(
        'x509',
        '-req',
        '-in',
        `${name}.csr`,
        '-CA',
        'ca.crt',
        '-CAkey',
        'ca.key',
        '-CAcreateserial',
        '-days',
        '1',
        '-extfile',
        `${name}.ext`,
        '-out',
        `${name}.crt`,
      );
    }
    pkiDir = d;
  }
  return { path: (f: string) => join(d, f), read: (f: string) => readFileSync(join(d, f)) };
}

/**
 * What the load balancer's datapath tests share: a client process that runs TCP and UDP
 * exchanges on request (JSON lines in, results out), backend servers that answer with
 * their name, and the plumbing to start both and wait until they listen.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { NetNs } from '../../src/lab/net/index.js';
import { repoRoot } from './kernel.js';

/** The pinned Node, for child processes. */
export const NODE = join(repoRoot, 'node_modules/.bin/node');

/** What one exchange saw: the answer (or an error code), its peers and, on errors, how long it took. */
export interface Reply {
  data?: string;
  /** getpeername of a connected socket: `ip:port`. */
  peer?: string;
  /** The source of a UDP reply, as recvmsg shows it: `ip:port`. */
  from?: string;
  error?: string;
  ms?: number;
}

/**
 * The client: one JSON request per line, `{ id, op, host, port, n, ... }`, answered by
 * `{ id, out: Reply[] }` after n exchanges in a row. Ops: `tcp` (connect, read to the end;
 * `localPort` binds the source port), `udp` (send "hi", one reply; `connected` connects
 * first, `localPort` binds) and `echo` (send `size` random bytes, compare what comes back).
 * HY_TIMEOUT_MS bounds each exchange (default 2000). Given a request (or a list of them) as
 * its argument instead, it runs those in turn, prints their lines and exits (for `exec` in
 * a pod).
 */
export const CLIENT_SCRIPT = String.raw`
const net = require('net'), dgram = require('dgram');
const T = Number(process.env.HY_TIMEOUT_MS || 2000);
function tcp(o) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    let data = '', peer;
    const s = net.connect({ host: o.host, port: o.port, ...(o.localPort ? { localPort: o.localPort } : {}) });
    const timer = setTimeout(() => { s.destroy(); resolve({ error: 'TIMEOUT', ms: Date.now() - t0 }); }, T);
    s.on('connect', () => { peer = s.remoteAddress + ':' + s.remotePort; });
    s.on('data', (d) => { data += d; });
    s.on('end', () => { clearTimeout(timer); s.destroy(); resolve({ data, peer }); });
    s.on('error', (e) => { clearTimeout(timer); resolve({ error: e.code, ms: Date.now() - t0 }); });
  });
}
function udp(o) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const s = dgram.createSocket({ type: 'udp4', reuseAddr: true });
    let timer;
    const done = (r) => { clearTimeout(timer); try { s.close(); } catch {} resolve(r); };
    timer = setTimeout(() => done({ error: 'TIMEOUT', ms: Date.now() - t0 }), T);
    s.on('error', (e) => done({ error: e.code, ms: Date.now() - t0 }));
    s.on('message', (m, r) => {
      let peer;
      if (o.connected) { const a = s.remoteAddress(); peer = a.address + ':' + a.port; }
      done({ data: String(m), from: r.address + ':' + r.port, peer });
    });
    const sent = (e) => { if (e) done({ error: e.code, ms: Date.now() - t0 }); };
    const go = () => o.connected
      ? s.connect(o.port, o.host, () => s.send('hi', sent))
      : s.send('hi', o.port, o.host, sent);
    if (o.localPort) s.bind(o.localPort, go); else go();
  });
}
function echo(o) {
  return new Promise((resolve) => {
    const sent = require('crypto').randomBytes(o.size);
    const got = [];
    const s = net.connect({ host: o.host, port: o.port }, () => s.end(sent));
    const timer = setTimeout(() => { s.destroy(); resolve({ error: 'TIMEOUT' }); }, 10000);
    s.on('data', (d) => got.push(d));
    s.on('end', () => {
      clearTimeout(timer);
      const all = Buffer.concat(got);
      resolve({ data: all.equals(sent) ? 'same' : 'differs after ' + all.length + ' bytes' });
    });
    s.on('error', (e) => { clearTimeout(timer); resolve({ error: e.code }); });
  });
}
const ops = { tcp, udp, echo };
async function run(o) {
  const out = [];
  for (let i = 0; i < (o.n || 1); i++) out.push(await ops[o.op](o));
  process.stdout.write(JSON.stringify({ id: o.id, out }) + '\n');
}
if (process.argv[1]) (async () => { for (const o of [].concat(JSON.parse(process.argv[1]))) await run(o); })();
else {
  require('readline').createInterface({ input: process.stdin }).on('line', (line) => run(JSON.parse(line)));
  process.stdout.write('ready\n');
}
`;

/**
 * Backends, from HY_BACKENDS (`[[name, address], ...]`; 0.0.0.0 for any): TCP :8080 answers
 * the name and closes, UDP :5353 answers the name, TCP :8081 echoes. With HY_SHOW_CLIENT=1
 * the TCP :8080 and UDP answers are "<name> <the client address the server saw>".
 */
export const SERVERS_SCRIPT = String.raw`
const net = require('net'), dgram = require('dgram');
const list = JSON.parse(process.env.HY_BACKENDS);
const show = process.env.HY_SHOW_CLIENT === '1';
const answer = (name, addr) => show ? name + ' ' + addr : name;
let pending = list.length * 3;
const up = () => { if (--pending === 0) process.stdout.write('ready\n'); };
for (const [name, ip] of list) {
  net.createServer((s) => { s.on('error', () => {}); s.end(answer(name, s.remoteAddress)); }).listen(8080, ip, up);
  net.createServer((s) => { s.on('error', () => {}); s.pipe(s); }).listen(8081, ip, up);
  const u = dgram.createSocket('udp4');
  u.on('message', (m, r) => u.send(answer(name, r.address), r.port, r.address));
  u.bind(5353, ip, up);
}
`;

export function lines(child: ChildProcess): AsyncIterator<string> {
  if (!child.stdout) throw new Error('child without stdout');
  return createInterface({ input: child.stdout })[Symbol.asyncIterator]();
}

/** Waits for a child's first line to be "ready"; its stderr is in the error when it is not. */
export async function waitReady(it: AsyncIterator<string>, what: string, child: ChildProcess): Promise<void> {
  let stderr = '';
  child.stderr?.on('data', (d) => {
    stderr += d;
  });
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not start: ${stderr}`)), 10_000);
  });
  try {
    const first = await Promise.race([it.next(), timeout]);
    if (first.value !== 'ready') throw new Error(`${what} did not start: ${first.value ?? ''} ${stderr}`);
  } finally {
    clearTimeout(timer);
  }
}

/** Starts backend servers in a namespace (the namespace's scope kills them) and waits until they listen. */
export async function startServers(
  ns: NetNs,
  backends: readonly (readonly [name: string, address: string])[],
  o: { showClient?: boolean } = {},
): Promise<ChildProcess> {
  const servers = ns.spawn(NODE, ['-e', SERVERS_SCRIPT], {
    env: { ...process.env, HY_BACKENDS: JSON.stringify(backends), HY_SHOW_CLIENT: o.showClient ? '1' : '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  await waitReady(lines(servers), `servers ${backends.map(([n]) => n).join(', ')}`, servers);
  return servers;
}

/** A running client process (CLIENT_SCRIPT), asked one request at a time. */
export class LbClient {
  readonly #replies: AsyncIterator<string>;
  #nextId = 1;

  private constructor(readonly child: ChildProcess) {
    this.#replies = lines(child);
  }

  /** Wraps a client the caller spawned (stdio piped) and waits until it is ready. */
  static async start(child: ChildProcess, what = 'client'): Promise<LbClient> {
    const c = new LbClient(child);
    await waitReady(c.#replies, what, child);
    return c;
  }

  async ask(req: Record<string, unknown>): Promise<Reply[]> {
    const id = this.#nextId++;
    this.child.stdin?.write(`${JSON.stringify({ ...req, id })}\n`);
    const r = await this.#replies.next();
    if (r.done) throw new Error('the client exited');
    const msg = JSON.parse(String(r.value)) as { id: number; out: Reply[] };
    assert.equal(msg.id, id);
    return msg.out;
  }
}

/** Who served each exchange, or `error <code>`. */
export const served = (rs: readonly Reply[]): string[] => rs.map((r) => r.data ?? `error ${r.error}`);

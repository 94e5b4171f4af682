/**
 * The L7 HTTP proxy's two engines behind one face, so that one set of tests holds both to
 * the same behaviour: the Node.js proxy (createHttpProxy, in this process) and the native
 * workers' executable (dist/native/hypha-http-proxy, a child with Node.js's IPC channel,
 * fed an endpoint as the agent would; with no datapath here, its test flags name the
 * upstream and the peer's identity).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { NATIVE_HTTP_PROXY } from '../../src/agent/l7.js';
import { CompiledRuleSet, type HttpRule } from '../../src/policy/http.js';
import { type L7EventsMessage, unpackEvent } from '../../src/proxy/http/events.js';
import { createHttpProxy } from '../../src/proxy/http/proxy.js';
import type { EndpointsMessage } from '../../src/proxy/http/rules.js';
import { skipUnlessPrivileged } from './kernel.js';

/** A record as both engines report it (the native one's arrive packed, as the agent gets them). */
export interface ProxyRecord {
  type: 'request' | 'response';
  verdict: 'forwarded' | 'denied' | 'error';
  method: string;
  /** As the request line had it (the native records' authority taken off). */
  url: string;
  code?: number;
  latencyNs?: number;
  reason?: string;
}

export interface ProxyUnderTest {
  port: number;
  /** Everything recorded so far (the native engine's batches included: it waits for them). */
  records(): Promise<ProxyRecord[]>;
  close(): Promise<void>;
}

export interface ProxyOptions {
  upstreamPort: number;
  /** The client's identity, as the datapath would have decided it. */
  peer: number;
  /** Rules by peer identity. */
  rules: Record<number, HttpRule[]>;
  maxHeaderSize?: number;
  /** The proxy knows no endpoint for the test's connections (as if no redirect led there). */
  noEndpoint?: boolean;
}

export interface ProxyEngine {
  name: 'node' | 'native';
  /** False to run, else why not. */
  skip: string | false;
  start(o: ProxyOptions): Promise<ProxyUnderTest>;
}

const POLICY = { kind: 'CiliumNetworkPolicy', namespace: 'production', name: 'catalog-l7-policy' };

const nodeEngine: ProxyEngine = {
  name: 'node',
  skip: false,
  async start(o) {
    const rules = new CompiledRuleSet({
      groups: Object.entries(o.rules).map(([id, r]) => ({ identities: [Number(id)], rules: r })),
    });
    const records: ProxyRecord[] = [];
    const proxy = createHttpProxy({
      resolve: () =>
        o.noEndpoint ? undefined : { host: '127.0.0.1', port: o.upstreamPort, rules, peerIdentity: o.peer },
      onRecord: (r) =>
        records.push({
          type: r.type,
          verdict: r.verdict,
          method: r.method,
          url: r.url,
          ...(r.code !== undefined ? { code: r.code } : {}),
          ...(r.latencyNs !== undefined ? { latencyNs: r.latencyNs } : {}),
          ...(r.reason !== undefined ? { reason: r.reason } : {}),
        }),
      ...(o.maxHeaderSize ? { maxHeaderSize: o.maxHeaderSize } : {}),
    });
    const port = await proxy.listen(0, '127.0.0.1');
    return { port, records: async () => records, close: () => proxy.close() };
  },
};

/** Waits for the first message of `type` from the child. */
function message<T>(child: ChildProcess, type: string, timeoutMs = 5000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.off('message', on);
      reject(new Error(`no ${type} message from ${NATIVE_HTTP_PROXY} in ${timeoutMs} ms`));
    }, timeoutMs);
    const on = (m: unknown) => {
      if ((m as { type?: unknown })?.type !== type) return;
      clearTimeout(timer);
      child.off('message', on);
      resolve(m as T);
    };
    child.on('message', on);
  });
}

const STATUS_WORDS = { FORWARDED: 'forwarded', DROPPED: 'denied', ERROR: 'error' } as const;

export function nativeRecord(packed: unknown): ProxyRecord {
  const e = unpackEvent(packed);
  const url = e.http?.url ?? '';
  return {
    type: e.type,
    verdict: STATUS_WORDS[e.verdict as keyof typeof STATUS_WORDS],
    method: e.http?.method ?? '',
    url: url.replace(/^http:\/\/[^/]*(?=\/)/, ''),
    ...(e.http?.code ? { code: e.http.code } : {}),
    ...(e.latencyNs !== undefined ? { latencyNs: e.latencyNs } : {}),
    ...(e.reason !== undefined ? { reason: e.reason } : {}),
  };
}

/** The native executable as the agent runs it, with one endpoint (127.0.0.1, egress). */
export async function startNative(
  o: ProxyOptions,
  extra: string[] = [],
): Promise<ProxyUnderTest & { child: ChildProcess }> {
  const args = [
    '--egress-port',
    '0',
    '--ingress-port',
    '0',
    '--test-upstream',
    `127.0.0.1:${o.upstreamPort}`,
    '--test-peer-identity',
    String(o.peer),
    ...(o.maxHeaderSize ? ['--max-header-size', String(o.maxHeaderSize)] : []),
    ...extra,
  ];
  const child = spawn(NATIVE_HTTP_PROXY, args, { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const records: ProxyRecord[] = [];
  child.on('message', (m: unknown) => {
    const msg = m as Partial<L7EventsMessage>;
    if (msg.type === 'l7') for (const p of msg.packed ?? []) records.push(nativeRecord(p));
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    await message(child, 'hello');
    child.send({
      type: 'endpoints',
      full: true,
      upsert: [
        {
          id: 1,
          // The egress listener finds the endpoint by the client's address (127.0.0.1).
          ip: o.noEndpoint ? '127.0.0.2' : '127.0.0.1',
          identity: 100,
          entries: Object.entries(o.rules).map(([id, rules]) => ({
            direction: 'egress' as const,
            identity: Number(id),
            protocol: 6,
            port: 0,
            portPrefixLen: 0,
            rules,
            policy: POLICY,
          })),
        },
      ],
      remove: [],
    } satisfies EndpointsMessage);
    const ready = await message<{ ports: [number, number] }>(child, 'ready');
    return {
      child,
      port: ready.ports[0],
      // The engine sends its records in batches at least every 5 ms.
      records: async () => {
        await new Promise((r) => setTimeout(r, 30));
        return records;
      },
      close: async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
        await exited;
      },
    };
  } catch (err) {
    child.kill('SIGKILL');
    throw new Error(`${(err as Error).message}\n${stderr}`);
  }
}

const nativeEngine: ProxyEngine = {
  name: 'native',
  // Its listeners are IP_TRANSPARENT: CAP_NET_ADMIN. (npm test builds it: a missing
  // executable is a failure, not a skip.)
  get skip() {
    return skipUnlessPrivileged();
  },
  start: (o) => startNative(o),
};

export const PROXY_ENGINES: readonly ProxyEngine[] = [nodeEngine, nativeEngine];

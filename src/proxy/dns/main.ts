/**
 * The DNS proxy as the agent runs it: a child process (`hypha proxy dns`), so that a crash
 * here never takes the agent's datapath management with it. It serves on the address and
 * port the datapath translates pod DNS to, reads each query's original destination from
 * the pinned hypha_dnsproxy4 map, takes its rules from the agent over IPC, and hands
 * every answer's IPs to the agent, releasing the answer only once the agent says the
 * policy maps and the ipcache hold them. Without an IPC channel (run by hand) it has no
 * rules, so it refuses every query.
 */
import { join } from 'node:path';
import { type BpfMap, openPinnedMap } from '../../bpf/index.js';
import { dnsproxyEntry4, dnsproxyKey4 } from '../../datapath/layout.js';
import { type DnsAnswer, type DnsProxy, type DnsRecord, startDnsProxy } from './proxy.js';
import { type AgentToDnsProxy, type DnsProxyToAgent, DnsRuleTable } from './rules.js';

type Decoded<C> = C extends { decode(d: DataView, o: number): infer T } ? T : never;
type NatKey = Decoded<typeof dnsproxyKey4>;
type NatEntry = Decoded<typeof dnsproxyEntry4>;

export interface DnsProxyProcessOptions {
  address: string;
  port: number;
  /** The node's bpffs directory, where hypha_dnsproxy4 is pinned. */
  pinDir: string;
  upstreamTimeoutMs?: number;
  /** How long an answer waits for the agent before it is answered SERVFAIL. */
  applyTimeoutMs?: number;
  log?(line: string): void;
}

export interface RunningDnsProxy {
  readonly port: number;
  close(): Promise<void>;
}

const PROTO = { udp: 17, tcp: 6 } as const;
/** How long before its expiry an applied IP still counts as fresh (the agent's expiry runs every second). */
const FRESH_MARGIN_MS = 2000;
const BATCH_MS = 20;
const BATCH_MAX = 256;

export async function runDnsProxy(o: DnsProxyProcessOptions): Promise<RunningDnsProxy> {
  const nat: BpfMap<NatKey, NatEntry> = openPinnedMap(join(o.pinDir, 'hypha_dnsproxy4'), {
    key: dnsproxyKey4,
    value: dnsproxyEntry4,
  });
  const send = (m: DnsProxyToAgent) => {
    if (!process.send || !process.connected) return false;
    try {
      return process.send(m);
    } catch {
      return false;
    }
  };
  let table = new DnsRuleTable();
  let seq = 0;
  const waiting = new Map<number, { resolve(): void; reject(e: Error): void; timer: NodeJS.Timeout }>();
  const applyTimeoutMs = o.applyTimeoutMs ?? 2000;
  /**
   * What the agent confirmed, per endpoint and name: IP -> the earliest it may expire (ms).
   * An answer whose IPs are all here, well before that, needs no wait: the policy maps and
   * the ipcache hold them already. Pruned as entries pass.
   */
  const applied = new Map<string, Map<string, number>>();
  const prune = setInterval(() => {
    const now = Date.now();
    for (const [key, ips] of applied) {
      for (const [ip, until] of ips) if (until <= now) ips.delete(ip);
      if (ips.size === 0) applied.delete(key);
    }
  }, 10_000);
  prune.unref();

  // Records and refreshed answers go to the agent in batches, every BATCH_MS or BATCH_MAX
  // items: a message per query would cost the proxy a pipe write and the agent a wakeup
  // each, for data nobody waits on (the answers' IPs are in the maps already).
  let records: DnsRecord[] = [];
  let refreshed: DnsAnswer[] = [];
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    clearTimeout(timer);
    timer = undefined;
    const m = { type: 'batch', records, answers: refreshed } as const;
    records = [];
    refreshed = [];
    send(m);
  };
  const later = () => {
    if (records.length + refreshed.length >= BATCH_MAX) flush();
    else timer ??= setTimeout(flush, BATCH_MS);
  };

  const onMessage = (raw: unknown) => {
    const m = raw as AgentToDnsProxy;
    if (m?.type === 'rules' && Array.isArray(m.endpoints)) table = new DnsRuleTable(m.endpoints);
    else if (m?.type === 'applied') {
      const w = waiting.get(m.seq);
      if (!w) return;
      waiting.delete(m.seq);
      clearTimeout(w.timer);
      if (m.error) w.reject(new Error(m.error));
      else w.resolve();
    }
  };
  process.on('message', onMessage);

  let proxy: DnsProxy;
  try {
    proxy = await startDnsProxy(o.address, o.port, {
      ...(o.upstreamTimeoutMs !== undefined ? { upstreamTimeoutMs: o.upstreamTimeoutMs } : {}),
      resolve(client, _local, transport) {
        const e = nat.lookup({ addr: client.ip, port: client.port, proto: PROTO[transport], pad: 0 });
        if (!e) return undefined;
        const ep = table.endpoint(e.endpoint);
        if (!ep) return undefined;
        const rule = table.lookup(e.endpoint, e.dst_identity, PROTO[transport], e.orig_dport);
        return {
          upstream: { host: e.orig_daddr, port: e.orig_dport },
          allows: (name) => rule?.allows(name) ?? false,
          endpointId: e.endpoint,
          identity: ep.identity,
          upstreamIdentity: e.dst_identity,
          ...(rule ? { cookie: rule.cookie } : {}),
        };
      },
      onAnswer(a: DnsAnswer) {
        const sentAt = Date.now();
        const key = `${a.endpointId}|${a.name.toLowerCase()}`;
        const known = applied.get(key);
        if (known && a.ips.every((ip) => (known.get(ip) ?? 0) > sentAt + FRESH_MARGIN_MS)) {
          // Applied before and valid for a while yet: the agent only extends the lifetime.
          refreshed.push(a);
          later();
          return;
        }
        const n = ++seq;
        return new Promise<void>((resolve, reject) => {
          if (!send({ type: 'answer', seq: n, ...a })) {
            reject(new Error('the agent is not connected'));
            return;
          }
          const timer = setTimeout(() => {
            waiting.delete(n);
            reject(new Error(`the agent did not apply the answer in ${applyTimeoutMs} ms`));
          }, applyTimeoutMs);
          waiting.set(n, {
            resolve: () => {
              // The agent keeps the IPs at least the answer's TTL from when it got them.
              const ips = applied.get(key) ?? new Map<string, number>();
              for (const ip of a.ips) ips.set(ip, Math.max(ips.get(ip) ?? 0, sentAt + a.ttl * 1000));
              applied.set(key, ips);
              resolve();
            },
            reject,
            timer,
          });
        });
      },
      onRecord(r) {
        records.push(r);
        later();
      },
    });
  } catch (err) {
    clearInterval(prune);
    process.off('message', onMessage);
    nat.close();
    throw err;
  }
  o.log?.(`hypha proxy dns: serving on ${o.address}:${proxy.port} (UDP and TCP)`);
  send({ type: 'ready' });
  return {
    port: proxy.port,
    async close() {
      clearInterval(prune);
      if (timer) flush();
      process.off('message', onMessage);
      for (const w of waiting.values()) {
        clearTimeout(w.timer);
        w.reject(new Error('the proxy is stopping'));
      }
      waiting.clear();
      await proxy.close();
      nat.close();
    },
  };
}

/**
 * The agent's side of L7 visibility: L7 events (as the proxies send them) turned into
 * stored flows and metrics by AgentFlows.addL7, per second on one core, against the
 * same agent's L3/L4 path (AgentFlows.add of a decoded datapath event) as the baseline.
 */
import { AgentFlows } from '../src/agent/flows.js';
import { HubbleMetrics, parseMetricsConfig } from '../src/hubble/index.js';
import type { L7Event } from '../src/hubble/l7.js';
import { PolicyRepository } from '../src/policy/index.js';
import { figure, writeResults } from './report.js';

const N = 200_000;
const FRONTEND = { identity: 1234, namespace: 'production', podName: 'frontend-6d8f9b-abcde' };

function flows(): AgentFlows {
  const f = new AgentFlows({
    nodeName: 'hy-worker',
    repo: new PolicyRepository(),
    endpoints: () => [
      {
        id: 101,
        ip: '10.244.2.7',
        identity: 5678,
        podNamespace: 'production',
        podName: 'catalog-7d9f8b6c5d-x2x4q',
        labels: { app: 'catalog' },
        hostIfindex: 7,
        hostIfname: 'lxc101',
      },
    ],
    // As the agent's: the same record for an IP until its CiliumEndpoint changes.
    remote: (ip) => (ip === '10.244.1.5' ? FRONTEND : undefined),
    service: () => undefined,
  });
  f.metrics = new HubbleMetrics(
    parseMetricsConfig(['dns', 'drop', 'tcp', 'flow', 'port-distribution', 'icmp', 'http']),
  );
  return f;
}

const event = (i: number, response: boolean): L7Event => ({
  time: Date.now(),
  kind: 'http',
  type: response ? 'response' : 'request',
  verdict: 'FORWARDED',
  trafficDirection: 'INGRESS',
  endpointId: 101,
  source: response
    ? { ip: '10.244.2.7', port: 8080, identity: 5678 }
    : { ip: '10.244.1.5', port: 40000 + (i % 1000), identity: 1234 },
  destination: response
    ? { ip: '10.244.1.5', port: 40000 + (i % 1000), identity: 1234 }
    : { ip: '10.244.2.7', port: 8080, identity: 5678 },
  ...(response ? { latencyNs: 250_000 } : {}),
  http: {
    code: response ? 200 : 0,
    method: 'GET',
    url: 'http://catalog:8080/api/v1/products',
    protocol: 'HTTP/1.1',
    headers: [
      { key: 'host', value: 'catalog:8080' },
      { key: 'user-agent', value: 'curl/7.88.1' },
      { key: 'accept', value: '*/*' },
    ],
  },
  policy: { kind: 'CiliumNetworkPolicy', namespace: 'production', name: 'catalog-l7-policy' },
});

function cpuRate(fn: (i: number) => void, n: number): number {
  for (let i = 0; i < 20_000; i++) fn(i); // warm up
  const t0 = process.cpuUsage();
  for (let i = 0; i < n; i++) fn(i);
  const d = process.cpuUsage(t0);
  return n / ((d.user + d.system) / 1e6);
}

const f = flows();
const events = Array.from({ length: 2000 }, (_, i) => event(i, i % 2 === 1));
const l7 = cpuRate((i) => f.addL7(events[i % events.length]!), N);
if (f.l7Errors) throw new Error(`L7 events refused: ${f.lastL7Error}`);
const figures = [
  figure('l7_flows.addL7_per_cpu_second', Math.round(l7), 'flows/s'),
  figure('l7_flows.us_per_event', 1e6 / l7, 'µs'),
];
for (const x of figures) console.log(`${x.name.padEnd(34)} ${x.value} ${x.unit}`);
writeResults('l7-flows', figures);

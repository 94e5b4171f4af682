import assert from 'node:assert/strict';
import { parseManifests } from '../../src/k8s/manifests.js';
import { buildOfflineWorld, findWorkload, type OfflineWorld, trace } from '../../src/policy/index.js';

/** A world from inline YAML documents. */
export function world(yaml: string): OfflineWorld {
  const m = parseManifests(yaml, 'inline.yaml');
  assert.deepEqual(m.errors, []);
  return buildOfflineWorld(m.docs);
}

const PROTO: Record<string, number> = { tcp: 6, udp: 17, sctp: 132, icmp: 1 };

/** The final verdict of a trace between two workloads. */
export function verdict(
  w: OfflineWorld,
  src: string,
  dst: string,
  port: number,
  proto = 'tcp',
  http?: { method: string; path: string },
) {
  const s = findWorkload(w, src);
  const d = findWorkload(w, dst);
  assert.ok(s, `no workload ${src}`);
  assert.ok(d, `no workload ${dst}`);
  return trace(w.repo, { src: s, dst: d, dport: port, protocol: PROTO[proto]!, ...(http ? { http } : {}) })
    .verdict;
}

export function pod(
  ns: string,
  name: string,
  labels: Record<string, string>,
  ports: { name: string; port: number; protocol?: string }[] = [],
): string {
  return `---
apiVersion: v1
kind: Pod
metadata:
  name: ${name}
  namespace: ${ns}
  labels: ${JSON.stringify(labels)}
spec:
  containers:
    - name: c
      image: x
      ports: ${JSON.stringify(ports.map((p) => ({ name: p.name, containerPort: p.port, protocol: p.protocol ?? 'TCP' })))}
`;
}

export function ns(name: string, labels: Record<string, string> = {}): string {
  return `---
apiVersion: v1
kind: Namespace
metadata:
  name: ${name}
  labels: ${JSON.stringify(labels)}
`;
}

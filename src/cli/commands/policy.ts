import { callAgent, defaultSocket } from '../../agent/client.js';
import { UsageError } from '../../errors.js';
import { endpointLabels } from '../../identity/index.js';
import { loadManifests } from '../../k8s/manifests.js';
import {
  buildOfflineWorld,
  type DirectionTrace,
  findWorkload,
  formatOrigin,
  lookupEntry,
  type OfflineWorld,
  protoName,
  type TraceResult,
  trace,
} from '../../policy/index.js';
import { type Command, formatTable, type OptionValues, OUTPUT_OPTION, wantsJson } from '../command.js';

const FILES = {
  type: 'string',
  short: 'f',
  multiple: true,
  value: 'path',
  description: 'manifest file or folder (repeatable)',
} as const;

function load(values: OptionValues): OfflineWorld {
  const paths = (values.file as string[] | undefined) ?? [];
  if (paths.length === 0) throw new UsageError('-f: give at least one manifest file or folder');
  const m = loadManifests(paths);
  const world = buildOfflineWorld(m.docs);
  world.errors.unshift(...m.errors.map((e) => ({ ...e, object: '(document)' })));
  return world;
}

/** A pseudo-endpoint for a trace from labels (`app=web,io.kubernetes.pod.namespace=prod`) or an identity. */
function endpointFrom(world: OfflineWorld, side: string, labels?: string, identity?: string) {
  if (identity !== undefined) {
    const id = Number(identity);
    const known = world.repo.identities().find(([i]) => i === id);
    if (!Number.isInteger(id) || !known)
      throw new UsageError(`--${side}-identity: ${identity} is not an identity known from the manifests`);
    const ns = known[1]['io.kubernetes.pod.namespace'] ?? '';
    return { id: -id, namespace: ns, identity: id, labels: known[1], name: `identity ${id}` };
  }
  const parsed: Record<string, string> = {};
  for (const part of (labels ?? '').split(',').filter(Boolean)) {
    const [k, v = ''] = part.split('=', 2);
    if (!k) throw new UsageError(`--${side}-labels: "${part}" is not key=value`);
    parsed[k.replace(/^k8s:/, '')] = v;
  }
  const namespace = parsed['io.kubernetes.pod.namespace'] ?? 'default';
  const full = endpointLabels({
    namespace,
    podLabels: Object.fromEntries(Object.entries(parsed).filter(([k]) => !k.startsWith('io.'))),
  });
  const match = world.repo
    .identities()
    .find(
      ([, l]) => JSON.stringify(Object.entries(l).sort()) === JSON.stringify(Object.entries(full).sort()),
    );
  return { id: -1, namespace, identity: match?.[0] ?? 0, labels: full, name: `labels ${labels}` };
}

/** `policy trace` against the running agent: its endpoints, identities and policies. */
async function liveTrace(values: OptionValues, stdout: NodeJS.WritableStream): Promise<number> {
  const src = values['src-endpoint'] as string | undefined;
  const dst = values['dst-endpoint'] as string | undefined;
  if (!src || !dst)
    throw new UsageError('without -f, give --src-endpoint and --dst-endpoint (ids of the live agent)');
  const dport = Number(values.dport ?? Number.NaN);
  if (!Number.isInteger(dport) || dport < 0 || dport > 65535)
    throw new UsageError(`--dport: "${values.dport ?? ''}" is not a port`);
  const protocol = PROTOCOLS[((values.protocol as string | undefined) ?? 'tcp').toLowerCase()];
  if (protocol === undefined)
    throw new UsageError(`--protocol: "${values.protocol}" is not tcp, udp, sctp, icmp or icmpv6`);
  const method = values['http-method'] as string | undefined;
  const path = values['http-path'] as string | undefined;
  const socket = (values.socket as string | undefined) ?? defaultSocket(values.node as string | undefined);
  const r = await callAgent<TraceResult>(socket, 'POST', '/v1/policy/trace', {
    src,
    dst,
    dport,
    protocol,
    ...(method || path ? { http: { method: method ?? 'GET', path: path ?? '/' } } : {}),
  });
  if (wantsJson(values)) stdout.write(`${JSON.stringify(r, null, 2)}\n`);
  else
    stdout.write(
      `${describeDirection(r.egress)}\n${describeDirection(r.ingress)}\n\nFinal verdict: ${r.verdict.toUpperCase()}\n`,
    );
  return r.verdict === 'allowed' ? 0 : 1;
}

const PROTOCOLS: Record<string, number> = { tcp: 6, udp: 17, sctp: 132, icmp: 1, icmpv6: 58, any: 0 };

function describeDirection(t: DirectionTrace): string {
  const lines = [
    `${t.direction === 'egress' ? 'Egress from' : 'Ingress to'} ${t.endpoint}: ${t.verdict.toUpperCase()}`,
  ];
  lines.push(`  ${t.reason}`);
  if (t.l7) lines.push(`  L7: ${t.l7.detail}`);
  if (t.enforced && t.selectedBy.length)
    lines.push(`  selected by: ${t.selectedBy.map(formatOrigin).join(', ')}`);
  return lines.join('\n');
}

export const policyCommands: Command[] = [
  {
    path: ['policy', 'validate'],
    summary: 'Check policy manifests offline: every error with file, document, object, field and reason',
    options: { file: FILES, output: OUTPUT_OPTION },
    run({ values, stdout, stderr }) {
      const world = load(values);
      const format = wantsJson(values) ? 'json' : 'table';
      if (format === 'json') {
        stdout.write(
          `${JSON.stringify({ policies: world.policyCount, errors: world.errors, warnings: world.warnings }, null, 2)}\n`,
        );
      } else {
        for (const e of world.errors) {
          stderr.write(`${e.file}[${e.index}]: ${e.object}: ${e.field ? `${e.field}: ` : ''}${e.message}\n`);
        }
        for (const w of world.warnings) stderr.write(`warning: ${w.file}[${w.index}]: ${w.message}\n`);
        stdout.write(
          `${world.policyCount} valid polic${world.policyCount === 1 ? 'y' : 'ies'}, ${world.errors.length} error(s), ${world.warnings.length} warning(s)\n`,
        );
      }
      return world.errors.length ? 1 : 0;
    },
  },
  {
    path: ['policy', 'trace'],
    summary: 'Which rule allows or denies a connection, from manifests (like cilium-dbg policy trace)',
    options: {
      file: FILES,
      'src-k8s-pod': {
        type: 'string',
        value: 'ns/name',
        description: 'source pod (or deployment) as namespace/name',
      },
      'dst-k8s-pod': { type: 'string', value: 'ns/name', description: 'destination pod (or deployment)' },
      'src-labels': {
        type: 'string',
        value: 'k=v,...',
        description: 'source as labels (namespace: io.kubernetes.pod.namespace)',
      },
      'dst-labels': { type: 'string', value: 'k=v,...', description: 'destination as labels' },
      'src-endpoint': {
        type: 'string',
        value: 'id',
        description: 'live: source endpoint id or container id (no -f)',
      },
      'dst-endpoint': {
        type: 'string',
        value: 'id',
        description: 'live: destination endpoint id or container id',
      },
      socket: { type: 'string', value: 'path', description: 'live: agent API socket' },
      node: { type: 'string', value: 'name', description: 'live: node whose agent to ask' },
      'src-identity': {
        type: 'string',
        value: 'id',
        description: 'source as an identity known from the manifests',
      },
      'dst-identity': { type: 'string', value: 'id', description: 'destination as an identity' },
      dport: { type: 'string', value: 'port', description: 'destination port (ICMP: type)' },
      protocol: { type: 'string', value: 'proto', description: 'tcp (default), udp, sctp, icmp' },
      'http-method': { type: 'string', value: 'method', description: 'HTTP method, to check L7 rules' },
      'http-path': { type: 'string', value: 'path', description: 'HTTP path, to check L7 rules' },
      output: OUTPUT_OPTION,
    },
    async run({ values, stdout, stderr }) {
      if (!values.file) return liveTrace(values, stdout);
      const world = load(values);
      for (const e of world.errors)
        stderr.write(`warning: skipped ${e.file}[${e.index}]: ${e.object}: ${e.field ?? ''} ${e.message}\n`);
      const pick = (side: 'src' | 'dst') => {
        const pod = values[`${side}-k8s-pod`] as string | undefined;
        const labels = values[`${side}-labels`] as string | undefined;
        const identity = values[`${side}-identity`] as string | undefined;
        const given = [pod, labels, identity].filter((x) => x !== undefined).length;
        if (given !== 1)
          throw new UsageError(`give exactly one of --${side}-k8s-pod, --${side}-labels, --${side}-identity`);
        if (pod) {
          const w = findWorkload(world, pod);
          if (!w) throw new UsageError(`--${side}-k8s-pod: no pod or workload "${pod}" in the manifests`);
          return w;
        }
        return endpointFrom(world, side, labels, identity);
      };
      const src = pick('src');
      const dst = pick('dst');
      const dport = Number(values.dport ?? NaN);
      if (!Number.isInteger(dport) || dport < 0 || dport > 65535)
        throw new UsageError(`--dport: "${values.dport ?? ''}" is not a port`);
      const pname = ((values.protocol as string | undefined) ?? 'tcp').toLowerCase();
      const protocol = PROTOCOLS[pname];
      if (protocol === undefined)
        throw new UsageError(`--protocol: "${pname}" is not tcp, udp, sctp, icmp or icmpv6`);
      const method = values['http-method'] as string | undefined;
      const path = values['http-path'] as string | undefined;
      const r = trace(world.repo, {
        src,
        dst,
        dport,
        protocol,
        ...(method || path ? { http: { method: method ?? 'GET', path: path ?? '/' } } : {}),
      });
      if (wantsJson(values)) {
        stdout.write(`${JSON.stringify(r, null, 2)}\n`);
      } else {
        stdout.write(
          `Tracing ${src.name} (identity ${src.identity}) -> ${dst.name} (identity ${dst.identity}) ${protoName(protocol)}/${dport}\n\n` +
            `${describeDirection(r.egress)}\n${describeDirection(r.ingress)}\n\nFinal verdict: ${r.verdict.toUpperCase()}\n`,
        );
      }
      return r.verdict === 'allowed' ? 0 : 1;
    },
  },
  {
    path: ['policy', 'matrix'],
    summary: 'Who may reach whom on which ports, from manifests',
    options: { file: FILES, output: OUTPUT_OPTION },
    run({ values, stdout }) {
      const world = load(values);
      const rows: { from: string; to: string; allowed: string[] }[] = [];
      const all = [...world.workloads.values()];
      for (const src of all) {
        const egress = world.repo.evaluate(src).egress;
        for (const dst of all) {
          if (src === dst) continue;
          const ingress = world.repo.evaluate(dst).ingress;
          const ports = new Set<string>();
          // Candidate ports: every port any rule mentions, plus the destination's own.
          const candidates = new Set<string>();
          for (const e of [...egress.entries.values(), ...ingress.entries.values()]) {
            if (e.portPrefixLen === 16) candidates.add(`${e.protocol}/${e.port}`);
          }
          for (const np of Object.values(dst.namedPorts ?? {}))
            candidates.add(`${np.protocol === 'UDP' ? 17 : 6}/${np.port}`);
          for (const c of candidates) {
            const [p, port] = c.split('/').map(Number) as [number, number];
            const ok = (dp: typeof egress, peer: number) => {
              if (!dp.enforced) return true;
              const e = lookupEntry(dp, peer, p, port);
              return e !== undefined && e.verdict !== 'deny';
            };
            if (ok(egress, dst.identity) && ok(ingress, src.identity)) ports.add(`${protoName(p)}/${port}`);
          }
          const open = !egress.enforced && !ingress.enforced;
          rows.push({ from: src.name, to: dst.name, allowed: open ? ['any'] : [...ports].sort() });
        }
      }
      if (wantsJson(values)) {
        stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
        return 0;
      }
      stdout.write(
        formatTable(
          ['FROM', 'TO', 'ALLOWED'],
          rows.map((r) => [r.from, r.to, r.allowed.join(' ') || '-']),
        ),
      );
      return 0;
    },
  },
];

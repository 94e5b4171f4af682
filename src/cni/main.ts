/**
 * hypha-cni: the CNI plugin (spec 1.0.0). A runtime runs it with CNI_* variables and the
 * network configuration on stdin; it wires the pod (veth, address, routes), asks the
 * agent for the address and registers the endpoint, and prints the result or a CNI error.
 */
import { callAgent, defaultSocket } from '../agent/client.js';
import { errorMessage } from '../errors.js';
import { sha256Hex } from './sha256.js';

// Every pod start pays for this process's start. Builtins come from getBuiltinModule, not
// `import`: an ESM facade of node:fs alone costs 2 ms. node:child_process (4 ms to load)
// is loaded only when an `ip` runs, and ADD loads it while the agent allocates.
const { readFileSync, writeSync } = process.getBuiltinModule('node:fs');
const { basename, dirname } = process.getBuiltinModule('node:path');
const childProcess = () => process.getBuiltinModule('node:child_process');

const SUPPORTED = ['0.3.0', '0.3.1', '0.4.0', '1.0.0'];
const GATEWAY = '169.254.1.1';

class CniError extends Error {
  constructor(
    readonly code: number,
    msg: string,
    readonly details = '',
  ) {
    super(msg);
  }
}

function run(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    childProcess().execFile('ip', args, (err, stdout, stderr) => {
      if (err) reject(new CniError(100, `ip ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

/**
 * stdin and stdout by file descriptor: process.stdin and process.stdout are streams whose
 * machinery costs every pod start milliseconds, for one read and one write.
 */
function readStdin(): string {
  return readFileSync(0, 'utf8');
}

function writeStdout(text: string): void {
  const buf = Buffer.from(text);
  for (let off = 0; off < buf.length; ) off += writeSync(1, buf, off);
}

interface NetConf {
  cniVersion: string;
  name: string;
  type: string;
  agentSocket?: string;
  prevResult?: unknown;
}

function parseConf(text: string): NetConf {
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch (err) {
    throw new CniError(6, 'network configuration is not JSON', errorMessage(err));
  }
  const c = o as Record<string, unknown>;
  if (typeof c !== 'object' || c === null)
    throw new CniError(6, 'network configuration must be a JSON object');
  for (const f of ['cniVersion', 'name', 'type'] as const) {
    if (typeof c[f] !== 'string') throw new CniError(7, `network configuration: ${f} is required`);
  }
  if (!SUPPORTED.includes(c.cniVersion as string)) {
    throw new CniError(
      1,
      `cniVersion ${c.cniVersion} is not supported`,
      `supported: ${SUPPORTED.join(', ')}`,
    );
  }
  return c as unknown as NetConf;
}

function env(name: string): string {
  const v = process.env[name];
  if (!v) throw new CniError(4, `${name} is required`);
  return v;
}

function cniArgs(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of (process.env.CNI_ARGS ?? '').split(';').filter(Boolean)) {
    const [k, v] = kv.split('=', 2);
    if (k && v !== undefined) out[k] = v;
  }
  return out;
}

/** Runtimes keep pod namespaces under /var/run/netns: ip(8) names them by that name. */
function netnsName(path: string): string {
  if (dirname(path) === '/var/run/netns' || dirname(path) === '/run/netns') return basename(path);
  throw new CniError(
    4,
    `CNI_NETNS ${path}: only named network namespaces (/var/run/netns/NAME) are supported`,
  );
}

function hostIfname(containerId: string, ifname: string): string {
  return `hy${sha256Hex(`${containerId}/${ifname}`).slice(0, 11)}`;
}

/** A stable, locally administered unicast MAC for a name: 02 and the first 5 bytes of its digest. */
function macFor(name: string): string {
  return `02${sha256Hex(name).slice(0, 10)}`.replace(/(..)(?!$)/g, '$1:');
}

function batch(ns: string | undefined, lines: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = childProcess().execFile(
      'ip',
      [...(ns ? ['-n', ns] : []), '-batch', '-'],
      (err, _out, stderr) => {
        if (err)
          reject(new CniError(100, `ip${ns ? ` -n ${ns}` : ''} -batch: ${stderr.trim() || err.message}`));
        else resolve();
      },
    );
    child.stdin?.end(`${lines.join('\n')}\n`);
  });
}

/** HYPHA_CNI_TRACE=1 prints when each step of a command ended, in ms since the process started. */
function step(what: string): void {
  if (process.env.HYPHA_CNI_TRACE) writeSync(2, `hypha-cni: ${what} at ${performance.now().toFixed(1)} ms\n`);
}

async function add(conf: NetConf, socket: string): Promise<unknown> {
  step('ADD');
  const containerId = env('CNI_CONTAINERID');
  const netnsPath = env('CNI_NETNS');
  const ifname = env('CNI_IFNAME');
  const ns = netnsName(netnsPath);
  const args = cniArgs();
  const owner = `${containerId}/${ifname}`;
  // The address first: the agent allocates while this process does the rest of its setup.
  // The failure is attached now: a rejection while the loop turns must not go unhandled.
  const allocation = callAgent<{ ip: string }>(socket, 'POST', '/v1/ipam', { owner }).catch((err: Error) => {
    throw new CniError(11, `IP allocation failed: ${err.message}`);
  });
  allocation.catch(() => {});
  // The request is written when the loop turns; then the names, the MACs (chosen here, so
  // no query is needed) and loading node:child_process for the `ip` runs overlap the agent.
  await new Promise((resolve) => setImmediate(resolve));
  const host = hostIfname(containerId, ifname);
  const hostMac = macFor(`host/${owner}`);
  const podMac = macFor(`pod/${owner}`);
  childProcess();
  const { ip } = await allocation;
  step('address allocated');
  try {
    // Two `ip -batch` runs do all the wiring.
    await batch(undefined, [
      `link add ${host} address ${hostMac} up type veth peer name ${ifname} address ${podMac} netns ${ns}`,
      `route replace ${ip}/32 dev ${host}`,
      `neigh replace ${ip} lladdr ${podMac} dev ${host} nud permanent`,
    ]);
    step('host side wired');
    // The agent attaches to the host side while the pod side is configured: neither waits
    // for the other. Both settle before an error undoes anything.
    const wired = await Promise.allSettled([
      batch(ns, [
        'link set lo up',
        `addr add ${ip}/32 dev ${ifname}`,
        `link set ${ifname} up`,
        `route replace default via ${GATEWAY} dev ${ifname} onlink`,
        `neigh replace ${GATEWAY} lladdr ${hostMac} dev ${ifname} nud permanent`,
      ]).then(() => step('pod side wired')),
      callAgent(socket, 'PUT', `/v1/endpoints/${encodeURIComponent(containerId)}`, {
        ifname,
        netns: netnsPath,
        podNamespace: args.K8S_POD_NAMESPACE ?? 'default',
        podName: args.K8S_POD_NAME ?? containerId.slice(0, 12),
        ip,
        hostIfname: host,
      }).then(() => step('endpoint registered')),
    ]);
    for (const r of wired) if (r.status === 'rejected') throw r.reason;
    return chain(conf.prevResult, {
      cniVersion: conf.cniVersion,
      interfaces: [
        { name: host, mac: hostMac },
        { name: ifname, mac: podMac, sandbox: netnsPath },
      ],
      ips: [{ address: `${ip}/32`, gateway: GATEWAY, interface: 1 }],
      routes: [{ dst: '0.0.0.0/0', gw: GATEWAY }],
      dns: {},
    });
  } catch (err) {
    // Undo everything this ADD did: the runtime will call ADD again or give up.
    await run(['link', 'del', host]).catch(() => {});
    await callAgent(socket, 'DELETE', `/v1/endpoints/${encodeURIComponent(containerId)}`).catch(() => {});
    await callAgent(socket, 'DELETE', `/v1/ipam/${encodeURIComponent(owner)}`).catch(() => {});
    throw err;
  }
}

interface CniResult {
  cniVersion: string;
  interfaces: Record<string, unknown>[];
  ips: { address: string; gateway?: string; interface?: number }[];
  routes: Record<string, unknown>[];
  dns: Record<string, unknown>;
}

/**
 * In a conflist, a plugin after others gets their result as prevResult and returns it with
 * its own added (interface indexes shifted past the earlier interfaces), as the spec's
 * chaining asks; alone, its own result is the result.
 */
function chain(prev: unknown, own: CniResult): CniResult {
  if (!prev || typeof prev !== 'object') return own;
  const p = prev as Partial<CniResult>;
  const before = Array.isArray(p.interfaces) ? p.interfaces : [];
  return {
    cniVersion: own.cniVersion,
    interfaces: [...before, ...own.interfaces],
    ips: [
      ...(Array.isArray(p.ips) ? p.ips : []),
      ...own.ips.map((x) => ({
        ...x,
        ...(x.interface !== undefined ? { interface: x.interface + before.length } : {}),
      })),
    ],
    routes: [...(Array.isArray(p.routes) ? p.routes : []), ...own.routes],
    dns: { ...(p.dns ?? {}), ...own.dns },
  };
}

async function del(socket: string): Promise<void> {
  const containerId = env('CNI_CONTAINERID');
  const ifname = env('CNI_IFNAME');
  // DEL succeeds for unknown containers and missing namespaces, as the spec asks.
  await callAgent(socket, 'DELETE', `/v1/endpoints/${encodeURIComponent(containerId)}`);
  await callAgent(socket, 'DELETE', `/v1/ipam/${encodeURIComponent(`${containerId}/${ifname}`)}`);
  await run(['link', 'del', hostIfname(containerId, ifname)]).catch(() => {});
}

async function check(socket: string, prevResult: unknown): Promise<void> {
  const containerId = env('CNI_CONTAINERID');
  const ifname = env('CNI_IFNAME');
  const ns = netnsName(env('CNI_NETNS'));
  const ep = await callAgent<{ ip: string }>(
    socket,
    'GET',
    `/v1/endpoints/${encodeURIComponent(containerId)}`,
  ).catch(() => {
    throw new CniError(3, `unknown container ${containerId}`);
  });
  // CHECK gets the ADD's result as prevResult (CNI 1.0): it must still hold our address.
  if (prevResult && typeof prevResult === 'object') {
    const ips = (prevResult as { ips?: { address?: string }[] }).ips ?? [];
    if (!ips.some((x) => x.address === `${ep.ip}/32`))
      throw new CniError(100, `prevResult does not hold ${ep.ip}/32, the address this container has`);
  }
  const addrs = await run(['-n', ns, '-j', 'addr', 'show', ifname]);
  if (!addrs.includes(`"${ep.ip}"`)) throw new CniError(100, `${ifname} in ${ns} does not have ${ep.ip}`);
  await run(['-j', 'link', 'show', hostIfname(containerId, ifname)]);
  const routes = await run(['-n', ns, 'route', 'show', 'default']);
  if (!routes.includes(GATEWAY)) throw new CniError(100, `no default route via ${GATEWAY} in ${ns}`);
}

async function main(): Promise<number> {
  const command = process.env.CNI_COMMAND;
  const conf = command === 'VERSION' ? undefined : parseConf(readStdin());
  const socket = conf?.agentSocket ?? defaultSocket();
  switch (command) {
    case 'VERSION':
      writeStdout(`${JSON.stringify({ cniVersion: '1.0.0', supportedVersions: SUPPORTED })}\n`);
      return 0;
    case 'ADD':
      writeStdout(`${JSON.stringify(await add(conf!, socket))}\n`);
      return 0;
    case 'DEL':
      await del(socket);
      return 0;
    case 'CHECK':
      await check(socket, conf!.prevResult);
      return 0;
    default:
      throw new CniError(4, `CNI_COMMAND "${command ?? ''}" is not ADD, DEL, CHECK or VERSION`);
  }
}

// Output is written synchronously and nothing is left running, so exit at once: the
// runtime waits for this process, and a natural exit takes a millisecond longer.
main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    const e = err instanceof CniError ? err : new CniError(999, errorMessage(err));
    writeStdout(
      `${JSON.stringify({ cniVersion: '1.0.0', code: e.code, msg: e.message, details: e.details })}\n`,
    );
    process.exit(1);
  },
);

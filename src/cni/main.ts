/**
 * hypha-cni: the CNI plugin (spec 1.0.0). A runtime runs it with CNI_* variables and the
 * network configuration on stdin; it wires the pod (veth, address, routes), asks the
 * agent for the address and registers the endpoint, and prints the result or a CNI error.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { basename, dirname } from 'node:path';
import { callAgent, defaultSocket } from '../agent/client.js';
import { errorMessage } from '../errors.js';

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
    execFile('ip', args, (err, stdout, stderr) => {
      if (err) reject(new CniError(100, `ip ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
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
  return `hy${createHash('sha256').update(`${containerId}/${ifname}`).digest('hex').slice(0, 11)}`;
}

/** A stable, locally administered unicast MAC for a name. */
function macFor(name: string): string {
  const h = createHash('sha256').update(name).digest();
  const b = [0x02, h[0]!, h[1]!, h[2]!, h[3]!, h[4]!];
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}

function batch(ns: string | undefined, lines: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile('ip', [...(ns ? ['-n', ns] : []), '-batch', '-'], (err, _out, stderr) => {
      if (err)
        reject(new CniError(100, `ip${ns ? ` -n ${ns}` : ''} -batch: ${stderr.trim() || err.message}`));
      else resolve();
    });
    child.stdin?.end(`${lines.join('\n')}\n`);
  });
}

/** HYPHA_CNI_TRACE=1 prints how long each step of a command took, to stderr. */
const t0 = performance.now();
function step(what: string): void {
  if (process.env.HYPHA_CNI_TRACE)
    process.stderr.write(`hypha-cni: ${what} at ${(performance.now() - t0).toFixed(1)} ms\n`);
}

async function add(conf: NetConf, socket: string): Promise<unknown> {
  step('start');
  const containerId = env('CNI_CONTAINERID');
  const netnsPath = env('CNI_NETNS');
  const ifname = env('CNI_IFNAME');
  const ns = netnsName(netnsPath);
  const args = cniArgs();
  const owner = `${containerId}/${ifname}`;
  const host = hostIfname(containerId, ifname);
  const { ip } = await callAgent<{ ip: string }>(socket, 'POST', '/v1/ipam', { owner }).catch(
    (err: Error) => {
      throw new CniError(11, `IP allocation failed: ${err.message}`);
    },
  );
  step('address allocated');
  try {
    // Addresses chosen here, so no query is needed; two `ip -batch` runs do all the wiring.
    const hostMac = macFor(`host/${owner}`);
    const podMac = macFor(`pod/${owner}`);
    await batch(undefined, [
      `link add ${host} address ${hostMac} type veth peer name ${ifname} address ${podMac} netns ${ns}`,
      `link set ${host} up`,
      `route replace ${ip}/32 dev ${host}`,
      `neigh replace ${ip} lladdr ${podMac} dev ${host} nud permanent`,
    ]);
    step('host side wired');
    await batch(ns, [
      'link set lo up',
      `addr add ${ip}/32 dev ${ifname}`,
      `link set ${ifname} up`,
      `route replace default via ${GATEWAY} dev ${ifname} onlink`,
      `neigh replace ${GATEWAY} lladdr ${hostMac} dev ${ifname} nud permanent`,
    ]);
    step('pod side wired');
    await callAgent(socket, 'PUT', `/v1/endpoints/${encodeURIComponent(containerId)}`, {
      ifname,
      netns: netnsPath,
      podNamespace: args.K8S_POD_NAMESPACE ?? 'default',
      podName: args.K8S_POD_NAME ?? containerId.slice(0, 12),
      ip,
      hostIfname: host,
    });
    step('endpoint registered');
    return {
      cniVersion: conf.cniVersion,
      interfaces: [
        { name: host, mac: hostMac },
        { name: ifname, mac: podMac, sandbox: netnsPath },
      ],
      ips: [{ address: `${ip}/32`, gateway: GATEWAY, interface: 1 }],
      routes: [{ dst: '0.0.0.0/0', gw: GATEWAY }],
      dns: {},
    };
  } catch (err) {
    // Undo everything this ADD did: the runtime will call ADD again or give up.
    await run(['link', 'del', host]).catch(() => {});
    await callAgent(socket, 'DELETE', `/v1/endpoints/${encodeURIComponent(containerId)}`).catch(() => {});
    await callAgent(socket, 'DELETE', `/v1/ipam/${encodeURIComponent(owner)}`).catch(() => {});
    throw err;
  }
}

async function del(socket: string): Promise<void> {
  const containerId = env('CNI_CONTAINERID');
  const ifname = env('CNI_IFNAME');
  // DEL succeeds for unknown containers and missing namespaces, as the spec asks.
  await callAgent(socket, 'DELETE', `/v1/endpoints/${encodeURIComponent(containerId)}`);
  await callAgent(socket, 'DELETE', `/v1/ipam/${encodeURIComponent(`${containerId}/${ifname}`)}`);
  await run(['link', 'del', hostIfname(containerId, ifname)]).catch(() => {});
}

async function check(socket: string): Promise<void> {
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
  const addrs = await run(['-n', ns, '-j', 'addr', 'show', ifname]);
  if (!addrs.includes(`"${ep.ip}"`)) throw new CniError(100, `${ifname} in ${ns} does not have ${ep.ip}`);
  await run(['-j', 'link', 'show', hostIfname(containerId, ifname)]);
  const routes = await run(['-n', ns, 'route', 'show', 'default']);
  if (!routes.includes(GATEWAY)) throw new CniError(100, `no default route via ${GATEWAY} in ${ns}`);
}

async function main(): Promise<number> {
  const command = process.env.CNI_COMMAND;
  const conf = command === 'VERSION' ? undefined : parseConf(await readStdin());
  const socket = conf?.agentSocket ?? defaultSocket();
  switch (command) {
    case 'VERSION':
      process.stdout.write(`${JSON.stringify({ cniVersion: '1.0.0', supportedVersions: SUPPORTED })}\n`);
      return 0;
    case 'ADD':
      process.stdout.write(`${JSON.stringify(await add(conf!, socket))}\n`);
      return 0;
    case 'DEL':
      await del(socket);
      return 0;
    case 'CHECK':
      await check(socket);
      return 0;
    default:
      throw new CniError(4, `CNI_COMMAND "${command ?? ''}" is not ADD, DEL, CHECK or VERSION`);
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const e = err instanceof CniError ? err : new CniError(999, errorMessage(err));
    process.stdout.write(
      `${JSON.stringify({ cniVersion: '1.0.0', code: e.code, msg: e.message, details: e.details })}\n`,
    );
    process.exitCode = 1;
  },
);

/**
 * Calling a CNI plugin the way a kubelet's runtime does: the plugin runs in the node's
 * network namespace with CNI_* variables and the network configuration on stdin, and
 * answers with a result or a CNI error document on stdout.
 */
import { dirname } from 'node:path';
import { errorMessage } from '../../errors.js';
import { execFile } from '../net/exec.js';

/** What one pod's ADD and DEL share. */
export interface CniCall {
  /** The plugin executable. */
  readonly bin: string;
  /** The node's network namespace, by name under /var/run/netns. */
  readonly nodeNetns: string;
  /** The network configuration, sent as stdin. */
  readonly conf: Readonly<Record<string, unknown>>;
  readonly containerId: string;
  /** The pod's network namespace, a path. */
  readonly netns: string;
  readonly ifname: string;
  readonly podNamespace: string;
  readonly podName: string;
}

export interface CniResult {
  /** The pod's first address, without the prefix length. */
  readonly ip: string;
  /** The whole result document, as the plugin printed it. */
  readonly raw: Readonly<Record<string, unknown>>;
}

const TIMEOUT_MS = 60_000;

/** The plugin failed: its CNI error document (code, msg, details), or what went wrong running it. */
export class CniError extends Error {
  override name = 'CniError';
  constructor(
    readonly command: 'ADD' | 'DEL',
    /** The CNI error code (1-11 well-known, 100+ plugin-specific); 999 when the plugin gave none. */
    readonly code: number,
    readonly msg: string,
    readonly details: string,
    options?: ErrorOptions,
  ) {
    super(`CNI ${command} failed with code ${code}: ${msg}${details ? ` (${details})` : ''}`, options);
  }
}

export async function cniAdd(call: CniCall): Promise<CniResult> {
  const doc = await invoke('ADD', call);
  const ips = doc.ips;
  const first: unknown = Array.isArray(ips) ? ips[0] : undefined;
  const address =
    typeof first === 'object' && first !== null ? (first as Record<string, unknown>).address : undefined;
  const ip = typeof address === 'string' ? address.split('/')[0] : undefined;
  if (ip === undefined || ip === '') {
    throw new CniError('ADD', 999, 'the result has no ips[0].address', JSON.stringify(doc));
  }
  return { ip, raw: doc };
}

export async function cniDel(call: CniCall): Promise<void> {
  await invoke('DEL', call);
}

async function invoke(command: 'ADD' | 'DEL', call: CniCall): Promise<Record<string, unknown>> {
  // nsenter, not `ip netns exec`: that one remounts /sys, which hides the host's bpffs.
  const argv = ['nsenter', `--net=/var/run/netns/${call.nodeNetns}`, '--', call.bin];
  const env = {
    ...process.env,
    CNI_COMMAND: command,
    CNI_CONTAINERID: call.containerId,
    CNI_NETNS: call.netns,
    CNI_IFNAME: call.ifname,
    CNI_ARGS: [
      'IgnoreUnknown=1',
      `K8S_POD_NAMESPACE=${call.podNamespace}`,
      `K8S_POD_NAME=${call.podName}`,
      `K8S_POD_INFRA_CONTAINER_ID=${call.containerId}`,
    ].join(';'),
    CNI_PATH: dirname(call.bin),
  };
  let result: Awaited<ReturnType<typeof execFile>>;
  try {
    result = await execFile(argv, { input: JSON.stringify(call.conf), env, timeoutMs: TIMEOUT_MS });
  } catch (err) {
    throw new CniError(command, 999, `could not run ${call.bin}`, errorMessage(err), { cause: err });
  }
  const doc = parseDocument(result.stdout);
  if (result.code === 0) return doc ?? {};
  if (doc !== undefined && typeof doc.code === 'number') {
    throw new CniError(command, doc.code, String(doc.msg ?? ''), String(doc.details ?? ''));
  }
  const how = result.code === null ? `was killed by ${result.signal}` : `exited with ${result.code}`;
  throw new CniError(command, 999, `${call.bin} ${how}`, (result.stderr || result.stdout).trim());
}

function parseDocument(stdout: string): Record<string, unknown> | undefined {
  try {
    const doc: unknown = JSON.parse(stdout);
    return typeof doc === 'object' && doc !== null && !Array.isArray(doc)
      ? (doc as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A client of the agent API over its unix socket (used by the CNI plugin and the CLI).
 * Plain HTTP/1.1 over node:net: loading node:http costs the CNI plugin 30-50 ms of its
 * start, more than everything else it does, and the API needs one request per connection.
 */
import { existsSync, readdirSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';

export class AgentUnavailableError extends Error {
  override name = 'AgentUnavailableError';
}

/** Where `hypha lab` keeps its clusters; a lab node's agent has its socket there. */
const LAB_ROOT = '/var/lib/hypha/lab';

/**
 * The agent socket of a node: HYPHA_AGENT_SOCKET, else the standard path, else (for a node
 * of a running `hypha lab`) the one in the lab's data directory, so that `--node
 * cilium-demo-worker` works from the host as it does in the node's cilium pod.
 */
export function defaultSocket(node?: string): string {
  if (process.env.HYPHA_AGENT_SOCKET) return process.env.HYPHA_AGENT_SOCKET;
  const name = node ?? process.env.HYPHA_NODE ?? 'default';
  const standard = `/var/run/hypha/${name}/agent.sock`;
  if (existsSync(standard) || !existsSync(LAB_ROOT)) return standard;
  for (const lab of readdirSync(LAB_ROOT)) {
    const inLab = join(LAB_ROOT, lab, 'nodes', name, 'agent.sock');
    if (existsSync(inLab)) return inLab;
  }
  return standard;
}

/** Splits a complete HTTP/1.1 response into status and body (Content-Length or chunked). */
export function parseResponse(raw: Buffer): { status: number; body: string } {
  const end = raw.indexOf('\r\n\r\n');
  if (end < 0) throw new Error('incomplete HTTP response');
  const head = raw.subarray(0, end).toString('latin1').split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head[0] ?? '')?.[1]);
  if (!Number.isInteger(status)) throw new Error(`bad status line: ${head[0]}`);
  const headers = new Map(
    head
      .slice(1)
      .map((l) => [l.slice(0, l.indexOf(':')).trim().toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]),
  );
  let body = raw.subarray(end + 4);
  if (headers.get('transfer-encoding')?.toLowerCase() === 'chunked') {
    const parts: Buffer[] = [];
    let off = 0;
    for (;;) {
      const lineEnd = body.indexOf('\r\n', off);
      if (lineEnd < 0) throw new Error('truncated chunked body');
      const size = Number.parseInt(body.subarray(off, lineEnd).toString('latin1'), 16);
      if (!Number.isFinite(size)) throw new Error('bad chunk size');
      if (size === 0) break;
      parts.push(body.subarray(lineEnd + 2, lineEnd + 2 + size));
      off = lineEnd + 2 + size + 2;
    }
    body = Buffer.concat(parts);
  } else if (headers.has('content-length')) {
    body = body.subarray(0, Number(headers.get('content-length')));
  }
  return { status, body: body.toString('utf8') };
}

export function callAgent<T>(
  socket: string,
  method: string,
  path: string,
  body?: unknown,
  timeoutMs = 10_000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? '' : JSON.stringify(body);
    const sock = connect({ path: socket });
    const chunks: Buffer[] = [];
    const timer = setTimeout(
      () => sock.destroy(new AgentUnavailableError(`agent at ${socket}: no answer in ${timeoutMs} ms`)),
      timeoutMs,
    );
    sock.on('connect', () => {
      sock.end(
        `${method} ${path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\nContent-Type: application/json\r\n` +
          `Content-Length: ${Buffer.byteLength(payload)}\r\n\r\n${payload}`,
      );
    });
    sock.on('data', (c: Buffer) => chunks.push(c));
    let failed = false;
    sock.on('error', (err: NodeJS.ErrnoException) => {
      failed = true;
      clearTimeout(timer);
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED')
        reject(new AgentUnavailableError(`no agent listening on ${socket} (${err.code})`));
      else reject(err);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      if (failed) return; // the error handler has answered
      if (chunks.length === 0) {
        reject(new AgentUnavailableError(`agent at ${socket}: closed the connection without an answer`));
        return;
      }
      let res: { status: number; body: string };
      try {
        res = parseResponse(Buffer.concat(chunks));
      } catch (err) {
        reject(new Error(`agent at ${socket}: ${method} ${path}: ${(err as Error).message}`));
        return;
      }
      let parsed: unknown;
      try {
        parsed = res.body ? JSON.parse(res.body) : undefined;
      } catch {
        reject(new Error(`agent at ${socket}: ${method} ${path}: not JSON: ${res.body.slice(0, 200)}`));
        return;
      }
      if (res.status >= 300) {
        reject(
          new Error(
            `agent at ${socket}: ${method} ${path}: ${(parsed as { error?: string })?.error ?? res.status}`,
          ),
        );
        return;
      }
      resolve(parsed as T);
    });
  });
}

/**
 * A streaming call (`/v1/flows`, `/v1/monitor`): each newline-delimited line of the answer
 * goes to `onLine` as it arrives; resolves when the agent ends the answer or `signal`
 * aborts. An `onLine` that throws ends the call with that error.
 */
export async function streamAgent(
  socketPath: string,
  method: 'GET' | 'POST',
  path: string,
  body: object | undefined,
  onLine: (line: string) => void,
  signal: AbortSignal,
): Promise<void> {
  const { request } = await import('node:http');
  await new Promise<void>((resolve, reject) => {
    const req = request(
      {
        socketPath,
        path,
        method,
        ...(body ? { headers: { 'content-type': 'application/json' } } : {}),
      },
      (res) => {
        let buf = '';
        res.on('data', (c: Buffer) => {
          buf += c.toString();
          try {
            for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
              const line = buf.slice(0, i);
              buf = buf.slice(i + 1);
              onLine(line);
            }
          } catch (err) {
            req.destroy();
            reject(err);
          }
        });
        res.on('end', resolve);
        res.on('error', reject);
      },
    );
    req.on('error', (err) => reject(new AgentUnavailableError(`agent at ${socketPath}: ${err.message}`)));
    signal.addEventListener('abort', () => {
      req.destroy();
      resolve();
    });
    req.end(body ? JSON.stringify(body) : undefined);
  });
}

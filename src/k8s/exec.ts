/**
 * `kubectl exec` as a client: a WebSocket to pods/exec with the v5.channel.k8s.io
 * protocol, stdin/stdout/stderr on their channels, the exit code from the error channel.
 */
import { randomBytes } from 'node:crypto';
import { request } from 'node:https';
import type { Duplex } from 'node:stream';
import { clientFrame, FrameReader } from '../apiserver/exec.js';
import type { KubeTarget } from './client.js';

export interface ExecOptions {
  namespace: string;
  pod: string;
  container?: string;
  command: string[];
  stdin?: NodeJS.ReadableStream;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

/** Runs the command in the pod; resolves with its exit code. */
export function execInPod(t: KubeTarget, o: ExecOptions): Promise<number> {
  const q = new URLSearchParams();
  for (const c of o.command) q.append('command', c);
  if (o.container) q.set('container', o.container);
  q.set('stdout', 'true');
  q.set('stderr', 'true');
  if (o.stdin) q.set('stdin', 'true');
  const url = new URL(
    `/api/v1/namespaces/${encodeURIComponent(o.namespace)}/pods/${encodeURIComponent(o.pod)}/exec?${q}`,
    t.server,
  );
  return new Promise((resolve, reject) => {
    const req = request(url, {
      method: 'GET',
      headers: {
        connection: 'Upgrade',
        upgrade: 'websocket',
        'sec-websocket-version': '13',
        'sec-websocket-key': randomBytes(16).toString('base64'),
        'sec-websocket-protocol': 'v5.channel.k8s.io',
        ...(t.token ? { authorization: `Bearer ${t.token}` } : {}),
      },
      ...(t.ca ? { ca: t.ca } : {}),
      ...(t.cert ? { cert: t.cert } : {}),
      ...(t.key ? { key: t.key } : {}),
      rejectUnauthorized: !t.insecure,
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        let msg = body;
        try {
          msg = (JSON.parse(body) as { message?: string }).message ?? body;
        } catch {
          // plain text
        }
        reject(new Error(`exec: HTTP ${res.statusCode}: ${msg.trim()}`));
      });
    });
    req.on('upgrade', (_res, socket: Duplex) => {
      let code = 0;
      const reader = new FrameReader();
      socket.on('data', (chunk: Buffer) =>
        reader.push(chunk, (opcode, payload) => {
          if (opcode === 8) socket.end();
          if (opcode !== 2 || payload.length === 0) return;
          const data = payload.subarray(1);
          if (payload[0] === 1) o.stdout.write(data);
          else if (payload[0] === 2) o.stderr.write(data);
          else if (payload[0] === 3) {
            const st = JSON.parse(data.toString()) as {
              status?: string;
              message?: string;
              details?: { causes?: { reason: string; message: string }[] };
            };
            if (st.status !== 'Success') {
              const exit = st.details?.causes?.find((c) => c.reason === 'ExitCode')?.message;
              code = exit ? Number(exit) : 1;
              if (!exit) o.stderr.write(`error: ${st.message ?? 'exec failed'}\n`);
            }
          }
        }),
      );
      socket.on('close', () => resolve(code));
      socket.on('error', reject);
      if (o.stdin) {
        o.stdin.on('data', (d: Buffer) =>
          socket.write(clientFrame(2, Buffer.concat([Buffer.from([0]), Buffer.from(d)]))),
        );
        o.stdin.on('end', () => socket.write(clientFrame(2, Buffer.from([255, 0]))));
      }
    });
    req.on('error', reject);
    req.end();
  });
}

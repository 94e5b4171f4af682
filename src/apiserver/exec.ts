/**
 * `kubectl exec` over WebSocket, as kube-apiserver serves it: the channel protocols
 * v4/v5.channel.k8s.io (a first byte naming stdin 0, stdout 1, stderr 2, error 3, resize
 * 4; v5 adds 255 to close a channel), the exit code as a Status on the error channel. The
 * WebSocket framing (RFC 6455, server side) is here too: binary messages, ping, close.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const PROTOCOLS = ['v5.channel.k8s.io', 'v4.channel.k8s.io'];

export interface ExecTarget {
  argv: string[];
  env: Record<string, string>;
}

export interface ExecRequest {
  namespace: string;
  pod: string;
  container: string | undefined;
  command: string[];
  stdin: boolean;
}

function frame(opcode: number, payload: Buffer): Buffer {
  const len = payload.length;
  const head =
    len < 126
      ? Buffer.from([0x80 | opcode, len])
      : len < 65536
        ? Buffer.from([0x80 | opcode, 126, len >> 8, len & 0xff])
        : Buffer.concat([
            Buffer.from([0x80 | opcode, 127]),
            (() => {
              const b = Buffer.alloc(8);
              b.writeBigUInt64BE(BigInt(len));
              return b;
            })(),
          ]);
  return Buffer.concat([head, payload]);
}

/** Parses client frames (always masked) from a growing buffer; returns whole messages. */
class FrameReader {
  #buf = Buffer.alloc(0);
  #fragments: Buffer[] = [];

  push(chunk: Buffer, on: (opcode: number, payload: Buffer) => void): void {
    this.#buf = Buffer.concat([this.#buf, chunk]);
    for (;;) {
      if (this.#buf.length < 2) return;
      const b0 = this.#buf[0]!;
      const b1 = this.#buf[1]!;
      let len = b1 & 0x7f;
      let off = 2;
      if (len === 126) {
        if (this.#buf.length < 4) return;
        len = this.#buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (this.#buf.length < 10) return;
        len = Number(this.#buf.readBigUInt64BE(2));
        off = 10;
      }
      const masked = (b1 & 0x80) !== 0;
      const maskLen = masked ? 4 : 0;
      if (this.#buf.length < off + maskLen + len) return;
      const mask = this.#buf.subarray(off, off + maskLen);
      const payload = Buffer.from(this.#buf.subarray(off + maskLen, off + maskLen + len));
      if (masked) for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i % 4]!;
      this.#buf = this.#buf.subarray(off + maskLen + len);
      const opcode = b0 & 0x0f;
      const fin = (b0 & 0x80) !== 0;
      if (opcode >= 8) on(opcode, payload);
      else {
        this.#fragments.push(payload);
        if (fin) {
          on(opcode === 0 ? 2 : opcode, Buffer.concat(this.#fragments));
          this.#fragments = [];
        }
      }
    }
  }
}

/** Parses an exec URL's query: `command` repeated, `container`, `stdin`. */
export function execRequest(namespace: string, pod: string, q: URLSearchParams): ExecRequest {
  const flag = (k: string) => q.get(k) === 'true' || q.get(k) === '1';
  return {
    namespace,
    pod,
    container: q.get('container') ?? undefined,
    command: q.getAll('command'),
    stdin: flag('stdin'),
  };
}

/**
 * Completes the WebSocket handshake on `socket` and runs the target with its stdio on the
 * channels. `resolve` finds what to run (or throws a message for the error channel).
 */
export function serveExec(
  req: IncomingMessage,
  socket: Duplex,
  exec: ExecRequest,
  resolve: (r: ExecRequest) => Promise<ExecTarget>,
): void {
  const key = req.headers['sec-websocket-key'];
  const offered = String(req.headers['sec-websocket-protocol'] ?? '')
    .split(',')
    .map((p) => p.trim());
  const protocol = PROTOCOLS.find((p) => offered.includes(p));
  if (!key || !protocol) {
    socket.end(
      'HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\n\r\nexec needs a WebSocket with v4 or v5.channel.k8s.io\n',
    );
    return;
  }
  const accept = createHash('sha1').update(`${key}${GUID}`).digest('base64');
  socket.write(
    `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: ${protocol}\r\n\r\n`,
  );
  const send = (channel: number, data: Buffer | string) => {
    if (!socket.destroyed) socket.write(frame(2, Buffer.concat([Buffer.from([channel]), Buffer.from(data)])));
  };
  const finish = (status: object) => {
    send(3, JSON.stringify({ metadata: {}, ...status }));
    if (!socket.destroyed) socket.end(frame(8, Buffer.from([0x03, 0xe8])));
  };
  void resolve(exec).then(
    (target) => {
      if (target.argv.length === 0)
        return finish({
          status: 'Failure',
          message: 'you must specify at least one command for the container',
          reason: 'BadRequest',
        });
      const child = spawn(target.argv[0]!, target.argv.slice(1), {
        env: target.env,
        stdio: [exec.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      });
      child.stdout?.on('data', (d: Buffer) => send(1, d));
      child.stderr?.on('data', (d: Buffer) => send(2, d));
      child.on('error', (err) =>
        finish({ status: 'Failure', message: err.message, reason: 'InternalError' }),
      );
      let closed = 0;
      const done = (code: number | null, signal: NodeJS.Signals | null) => {
        if (code === 0) return finish({ status: 'Success' });
        const exit = code ?? 128 + (signal === 'SIGKILL' ? 9 : 15);
        finish({
          status: 'Failure',
          message: `command terminated with non-zero exit code: exit status ${exit}`,
          reason: 'NonZeroExitCode',
          details: { causes: [{ reason: 'ExitCode', message: String(exit) }] },
        });
      };
      let exit: [number | null, NodeJS.Signals | null] | undefined;
      const maybeDone = () => {
        if (exit && closed === 2) done(...exit);
      };
      child.stdout?.on('close', () => {
        closed++;
        maybeDone();
      });
      child.stderr?.on('close', () => {
        closed++;
        maybeDone();
      });
      child.on('exit', (code, signal) => {
        exit = [code, signal];
        maybeDone();
      });
      const reader = new FrameReader();
      socket.on('data', (chunk: Buffer) =>
        reader.push(chunk, (opcode, payload) => {
          if (opcode === 8) {
            child.kill('SIGKILL');
            socket.end();
          } else if (opcode === 9) socket.write(frame(10, payload));
          else if (opcode === 2 && payload.length > 0) {
            const channel = payload[0]!;
            if (channel === 0) child.stdin?.write(payload.subarray(1));
            else if (channel === 255 && payload[1] === 0) child.stdin?.end();
          }
        }),
      );
      socket.on('close', () => {
        if (child.exitCode === null) child.kill('SIGKILL');
      });
      socket.on('error', () => child.kill('SIGKILL'));
    },
    (err: unknown) =>
      finish({ status: 'Failure', message: (err as Error).message, reason: 'NotFound', code: 404 }),
  );
}

/** A client frame: masked, as RFC 6455 requires of clients. */
export function clientFrame(opcode: number, payload: Buffer): Buffer {
  const f = frame(opcode, payload);
  const headLen = f.length - payload.length;
  const mask = Buffer.from([0x1f, 0x2e, 0x3d, 0x4c]);
  const head = Buffer.from(f.subarray(0, headLen));
  head[1] = head[1]! | 0x80;
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i]! ^= mask[i % 4]!;
  return Buffer.concat([head, mask, body]);
}

export { FrameReader };

/** A client of the agent API over its unix socket (used by the CNI plugin and the CLI). */
import { request } from 'node:http';

export class AgentUnavailableError extends Error {
  override name = 'AgentUnavailableError';
}

export function defaultSocket(node?: string): string {
  return (
    process.env.HYPHA_AGENT_SOCKET ??
    `/var/run/hypha/${node ?? process.env.HYPHA_NODE ?? 'default'}/agent.sock`
  );
}

export function callAgent<T>(
  socket: string,
  method: string,
  path: string,
  body?: unknown,
  timeoutMs = 10_000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        socketPath: socket,
        method,
        path,
        headers: { 'content-type': 'application/json' },
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          let parsed: unknown;
          try {
            parsed = text ? JSON.parse(text) : undefined;
          } catch {
            reject(new Error(`agent at ${socket}: ${method} ${path}: not JSON: ${text.slice(0, 200)}`));
            return;
          }
          if ((res.statusCode ?? 500) >= 300) {
            reject(
              new Error(
                `agent at ${socket}: ${method} ${path}: ${(parsed as { error?: string })?.error ?? res.statusCode}`,
              ),
            );
            return;
          }
          resolve(parsed as T);
        });
      },
    );
    req.on('timeout', () =>
      req.destroy(new AgentUnavailableError(`agent at ${socket}: no answer in ${timeoutMs} ms`)),
    );
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED')
        reject(new AgentUnavailableError(`no agent listening on ${socket} (${err.code})`));
      else reject(err);
    });
    if (body !== undefined) req.write(JSON.stringify(body));
    req.end();
  });
}

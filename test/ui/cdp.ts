/**
 * Headless Chromium driven through the DevTools protocol over its WebSocket (Node's
 * global WebSocket): just enough for the UI test to load a page, evaluate script, click
 * with real mouse events and take a screenshot. The browser runs in its own process
 * group with a throw-away profile; `close` ends that group by its id and removes the
 * profile, whatever state the browser is in.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const CHROMIUM = '/usr/bin/chromium';

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
  method: string;
}

type Listener = (params: Record<string, unknown>, sessionId?: string) => void;

export class Cdp {
  readonly #ws: WebSocket;
  #id = 0;
  readonly #pending = new Map<number, Pending>();
  readonly #listeners = new Map<string, Listener[]>();

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.addEventListener('message', (ev) => {
      const msg = JSON.parse(String(ev.data)) as {
        id?: number;
        result?: unknown;
        error?: { message: string; data?: string };
        method?: string;
        params?: Record<string, unknown>;
        sessionId?: string;
      };
      if (msg.id !== undefined) {
        const p = this.#pending.get(msg.id);
        if (!p) return;
        this.#pending.delete(msg.id);
        if (msg.error) p.reject(new Error(`${p.method}: ${msg.error.message} ${msg.error.data ?? ''}`));
        else p.resolve(msg.result);
      } else if (msg.method) {
        for (const l of this.#listeners.get(msg.method) ?? []) l(msg.params ?? {}, msg.sessionId);
      }
    });
    ws.addEventListener('close', () => {
      for (const p of this.#pending.values())
        p.reject(new Error(`${p.method}: the browser connection closed`));
      this.#pending.clear();
    });
  }

  static connect(url: string): Promise<Cdp> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.addEventListener('open', () => resolve(new Cdp(ws)), { once: true });
      ws.addEventListener('error', () => reject(new Error(`cannot connect to ${url}`)), { once: true });
    });
  }

  send<T = Record<string, unknown>>(method: string, params: object = {}, sessionId?: string): Promise<T> {
    const id = ++this.#id;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject, method });
      this.#ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    });
  }

  on(method: string, l: Listener): void {
    this.#listeners.set(method, [...(this.#listeners.get(method) ?? []), l]);
  }

  close(): void {
    this.#ws.close();
  }
}

/** One tab, attached with a flat session. */
export class Page {
  readonly errors: string[] = [];

  constructor(
    readonly cdp: Cdp,
    readonly session: string,
  ) {
    cdp.on('Runtime.exceptionThrown', (p, s) => {
      if (s !== session) return;
      const d = p.exceptionDetails as { text?: string; exception?: { description?: string } };
      this.errors.push(d.exception?.description ?? d.text ?? 'exception');
    });
    cdp.on('Runtime.consoleAPICalled', (p, s) => {
      if (s !== session || p.type !== 'error') return;
      this.errors.push(
        (p.args as { value?: unknown; description?: string }[])
          .map((a) => String(a.value ?? a.description ?? ''))
          .join(' '),
      );
    });
  }

  send<T = Record<string, unknown>>(method: string, params: object = {}): Promise<T> {
    return this.cdp.send<T>(method, params, this.session);
  }

  /** The value of an expression (awaited if a promise); a thrown exception rejects. */
  async eval<T>(expression: string): Promise<T> {
    const r = await this.send<{
      result: { value?: unknown };
      exceptionDetails?: { text: string; exception?: { description?: string } };
    }>('Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true });
    if (r.exceptionDetails)
      throw new Error(
        `${expression}: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`,
      );
    return r.result.value as T;
  }

  /** Polls an expression until it returns a truthy value; its last value in the error. */
  async waitFor<T>(expression: string, what: string, timeoutMs = 30_000): Promise<T> {
    const end = Date.now() + timeoutMs;
    let last: unknown;
    for (;;) {
      last = await this.eval<T>(expression).catch((err: Error) => err.message);
      if (last && !(typeof last === 'string' && last.startsWith(expression))) return last as T;
      if (Date.now() > end)
        throw new Error(
          `timed out waiting for ${what}; last: ${JSON.stringify(last)}\nerrors: ${this.errors.join('\n')}`,
        );
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** A real left click (mouse down and up) at a point of the viewport. */
  async click(x: number, y: number): Promise<void> {
    await this.send('Input.dispatchMouseEvent', { type: 'mouseMoved', x, y });
    await this.send('Input.dispatchMouseEvent', {
      type: 'mousePressed',
      x,
      y,
      button: 'left',
      clickCount: 1,
    });
    await this.send('Input.dispatchMouseEvent', {
      type: 'mouseReleased',
      x,
      y,
      button: 'left',
      clickCount: 1,
    });
  }

  async screenshot(): Promise<Buffer> {
    const r = await this.send<{ data: string }>('Page.captureScreenshot', { format: 'png' });
    return Buffer.from(r.data, 'base64');
  }
}

/** A headless Chromium with a temporary profile; the caller must `close()` it. */
export class Chromium {
  readonly profile: string;
  readonly proc: ChildProcess;
  #cdp: Cdp | undefined;
  #stderr = '';

  private constructor(profile: string, proc: ChildProcess) {
    this.profile = profile;
    this.proc = proc;
  }

  /** Starts the browser; on any failure it is already cleaned up. */
  static async launch(timeoutMs = 30_000): Promise<Chromium> {
    const profile = mkdtempSync(join(tmpdir(), 'hyui-chromium-'));
    const proc = spawn(
      CHROMIUM,
      [
        '--headless=new',
        '--no-sandbox',
        '--remote-debugging-port=0',
        `--user-data-dir=${profile}`,
        '--disable-gpu',
        '--no-first-run',
        '--no-default-browser-check',
        // Nothing but the UI under test: no updates, sync, safe browsing or metrics calls.
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--disable-default-apps',
        '--disable-domain-reliability',
        '--disable-client-side-phishing-detection',
        '--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication',
        '--no-pings',
        '--metrics-recording-only',
        '--window-size=1440,960',
        'about:blank',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'], detached: true },
    );
    const b = new Chromium(profile, proc);
    try {
      const url = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`Chromium printed no DevTools URL in ${timeoutMs} ms:\n${b.#stderr}`)),
          timeoutMs,
        );
        proc.stderr!.setEncoding('utf8');
        proc.stderr!.on('data', (c: string) => {
          b.#stderr += c;
          if (b.#stderr.length > 64 * 1024) b.#stderr = b.#stderr.slice(-32 * 1024);
          const m = /DevTools listening on (ws:\/\/\S+)/.exec(b.#stderr);
          if (m) {
            clearTimeout(timer);
            resolve(m[1]!);
          }
        });
        proc.on('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
        proc.on('exit', (code, signal) => {
          clearTimeout(timer);
          reject(new Error(`Chromium exited (${signal ?? code}):\n${b.#stderr}`));
        });
      });
      b.#cdp = await Cdp.connect(url);
      return b;
    } catch (err) {
      await b.close();
      throw err;
    }
  }

  /** A new tab of the given size, attached. */
  async page(width = 1440, height = 960): Promise<Page> {
    const cdp = this.#cdp!;
    const { targetId } = await cdp.send<{ targetId: string }>('Target.createTarget', { url: 'about:blank' });
    const { sessionId } = await cdp.send<{ sessionId: string }>('Target.attachToTarget', {
      targetId,
      flatten: true,
    });
    const page = new Page(cdp, sessionId);
    await page.send('Runtime.enable');
    await page.send('Page.enable');
    await page.send('Emulation.setDeviceMetricsOverride', {
      width,
      height,
      deviceScaleFactor: 1,
      mobile: false,
    });
    return page;
  }

  /** Ends the browser's process group by its id (politely, then not), and removes the profile. */
  async close(): Promise<void> {
    const pid = this.proc.pid;
    try {
      this.#cdp?.close();
    } catch {}
    if (pid !== undefined && this.proc.exitCode === null && this.proc.signalCode === null) {
      const exited = new Promise<boolean>((r) => this.proc.once('exit', () => r(true)));
      const signal = (s: NodeJS.Signals) => {
        try {
          process.kill(-pid, s);
        } catch {}
      };
      signal('SIGTERM');
      const done = await Promise.race([
        exited,
        new Promise<boolean>((r) => setTimeout(() => r(false), 3000)),
      ]);
      if (!done) signal('SIGKILL');
    }
    // The group's other processes (renderers, zygote) may outlive the leader by a moment.
    const pgid = pid;
    if (pgid !== undefined) {
      try {
        process.kill(-pgid, 'SIGKILL');
      } catch {}
    }
    rmSync(this.profile, { recursive: true, force: true });
  }
}

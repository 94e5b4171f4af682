/**
 * `NetScope`: owns the namespaces, links and processes made through it and removes them, in
 * reverse order, on `dispose()` / `await using`, on process exit and on SIGINT/SIGTERM/SIGHUP.
 */
import type { ChildProcess } from 'node:child_process';
import { NetBatch } from './batch.js';
import * as cmd from './commands.js';
import { NetError } from './errors.js';
import { forEachLimit, ipBatch, ipBatchSync, ipJson } from './exec.js';
import { NAME_PREFIX, uniqueName } from './names.js';
import { NetNs, type NetRecorder, type NetResource } from './netns.js';

type Entry =
  | NetResource
  | { readonly kind: 'child'; readonly child: ChildProcess }
  | { readonly kind: 'defer'; readonly fn: () => void | Promise<void> };

/** Kernel deletions in one step: a root `ip -batch` plus one per foreign namespace. */
interface DeletePlan {
  /** Root-namespace links. */
  readonly links: string[];
  readonly netns: string[];
  /** Links by foreign namespace. */
  readonly byNs: Map<string, string[]>;
}

const emptyPlan = (): DeletePlan => ({ links: [], netns: [], byNs: new Map() });

const CHILD_GRACE_MS = 2000;

export class NetScope implements AsyncDisposable {
  private readonly entries: Entry[] = [];
  private state: 'open' | 'disposing' | 'disposed' = 'open';
  private readonly recorder: NetRecorder = {
    created: (r) => this.entries.push(r),
    spawned: (child) => this.entries.push({ kind: 'child', child }),
  };
  /** The root namespace; links created through this handle belong to the scope. */
  readonly root: NetNs = new NetNs(undefined, this.recorder);

  constructor() {
    live.add(this);
    installExitHandlers();
  }

  get disposed(): boolean {
    return this.state !== 'open';
  }

  /** A fresh unique `hy` name (see `uniqueName`). */
  name(prefix = ''): string {
    return uniqueName(prefix);
  }

  /** Creates a namespace owned by the scope, with a unique name unless one is given. */
  async netns(opts: { name?: string; prefix?: string; loopback?: boolean } = {}): Promise<NetNs> {
    this.checkOpen();
    const name = opts.name ?? uniqueName(opts.prefix ?? 'n');
    await NetNs.create(name, opts.loopback === undefined ? {} : { loopback: opts.loopback });
    this.entries.push({ kind: 'netns', name });
    return new NetNs(name, this.recorder);
  }

  /** Creates `count` namespaces in one batch. */
  async namespaces(count: number, opts: { prefix?: string; loopback?: boolean } = {}): Promise<NetNs[]> {
    this.checkOpen();
    const names = Array.from({ length: count }, () => uniqueName(opts.prefix ?? 'n'));
    const batch = this.batch();
    for (const n of names) batch.addNetns(n, opts.loopback === undefined ? {} : { loopback: opts.loopback });
    await batch.run();
    return names.map((n) => new NetNs(n, this.recorder));
  }

  /** A batch whose creations the scope removes. */
  batch(): NetBatch {
    this.checkOpen();
    return new NetBatch(this.recorder);
  }

  /** A handle on `ns` that records into this scope what it creates (the namespace itself is not owned). */
  handle(ns: NetNs | string): NetNs {
    return new NetNs(typeof ns === 'string' ? NetNs.of(ns).name : ns.name, this.recorder);
  }

  /** Takes ownership of something made elsewhere. */
  adopt(resource: NetResource | ChildProcess): void {
    this.checkOpen();
    if ('kind' in resource) this.entries.push(resource);
    else this.recorder.spawned(resource);
  }

  /** Runs `fn` during dispose, in reverse order with everything else. */
  defer(fn: () => void | Promise<void>): void {
    this.checkOpen();
    this.entries.push({ kind: 'defer', fn });
  }

  /**
   * Removes everything, newest first, carrying on past failures; then checks that no owned
   * namespace or root-namespace link is left and throws a NetError naming what went wrong.
   */
  async dispose(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'disposing';
    const errors: unknown[] = [];
    const owned = this.ownedNamespaces();
    try {
      let plan = emptyPlan();
      const flush = async (): Promise<void> => {
        const p = plan;
        plan = emptyPlan();
        await forEachLimit([...p.byNs], 8, ([ns, links]) =>
          ipBatch(`cleanup in netns ${ns}`, ns, cmd.linkDelMany(links), true),
        ).catch((e: unknown) => errors.push(e));
        if (p.netns.length > 0) {
          await this.strayRootVeths(owned).then(
            (names) => p.links.push(...names.filter((n) => !p.links.includes(n))),
            (e: unknown) => errors.push(e),
          );
        }
        // Links before namespaces: a namespace's own links would otherwise go only when the
        // kernel gets round to freeing it. -force: keep going past what is already gone (a
        // veth whose peer went first).
        const lines = [...cmd.linkDelMany(p.links), ...p.netns.map((n) => cmd.netnsDel(n).args.join(' '))];
        await ipBatch('cleanup in root namespace', undefined, lines, true).catch(() => {});
      };
      for (const e of [...this.entries].reverse()) {
        if (e.kind === 'child' || e.kind === 'defer') {
          await flush();
          try {
            if (e.kind === 'child') await stopChild(e.child);
            else await e.fn();
          } catch (err) {
            errors.push(err);
          }
        } else addDeletion(plan, e, owned);
      }
      await flush();
      const left = await this.leftovers();
      if (left.length > 0) errors.push(new NetError(`still present after cleanup: ${left.join(', ')}`));
    } finally {
      this.entries.length = 0;
      this.state = 'disposed';
      live.delete(this);
      uninstallExitHandlersIfIdle();
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) {
      throw new NetError(
        `cleanup failed ${errors.length} times: ${errors.map(String).join('; ')}`,
        {},
        {
          cause: new AggregateError(errors),
        },
      );
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }

  /** Best effort for exit handlers: kill processes, delete kernel objects, synchronously. */
  disposeSync(): void {
    if (this.state !== 'open') return;
    this.state = 'disposed';
    const plan = emptyPlan();
    const owned = this.ownedNamespaces();
    for (const e of [...this.entries].reverse()) {
      if (e.kind === 'child') e.child.kill('SIGKILL');
      else if (e.kind === 'defer') {
        try {
          void e.fn();
        } catch {}
      } else addDeletion(plan, e, owned);
    }
    for (const [ns, links] of plan.byNs) ipBatchSync(ns, cmd.linkDelMany(links));
    ipBatchSync(undefined, [
      ...cmd.linkDelMany(plan.links),
      ...plan.netns.map((n) => cmd.netnsDel(n).args.join(' ')),
    ]);
    this.entries.length = 0;
    live.delete(this);
  }

  private ownedNamespaces(): Set<string> {
    const owned = new Set<string>();
    for (const e of this.entries) if (e.kind === 'netns') owned.add(e.name);
    return owned;
  }

  /**
   * Root `hy` veths whose peer sits in a namespace about to go: found by the peer's netnsid,
   * so that links made without the scope's knowledge do not outlive it.
   */
  private async strayRootVeths(owned: Set<string>): Promise<string[]> {
    const ids = new Map<number, string>();
    for (const n of await ipJson<{ name: string; id?: number }>('list netns ids', undefined, [
      'netns',
      'list',
    ])) {
      if (n.id !== undefined && owned.has(n.name)) ids.set(n.id, n.name);
    }
    if (ids.size === 0) return [];
    const veths = await ipJson<{ ifname: string; link_netnsid?: number }>('list root veths', undefined, [
      'link',
      'show',
      'type',
      'veth',
    ]);
    return veths
      .filter(
        (l) => l.link_netnsid !== undefined && ids.has(l.link_netnsid) && l.ifname.startsWith(NAME_PREFIX),
      )
      .map((l) => l.ifname);
  }

  private async leftovers(): Promise<string[]> {
    const left: string[] = [];
    const existing = new Set(await NetNs.list(''));
    const rootLinks = new Set(
      (await ipJson<{ ifname: string }>('list root links', undefined, ['link', 'show'])).map((l) => l.ifname),
    );
    for (const e of this.entries) {
      if (e.kind === 'netns' && existing.has(e.name)) left.push(`netns ${e.name}`);
      if (e.kind === 'link' && e.ns === undefined && rootLinks.has(e.name)) left.push(`link ${e.name}`);
    }
    return left;
  }

  private checkOpen(): void {
    if (this.state !== 'open') throw new NetError('NetScope is already disposed');
  }
}

function addDeletion(plan: DeletePlan, r: NetResource, owned: Set<string>): void {
  if (r.kind === 'netns') plan.netns.push(r.name);
  else if (r.ns === undefined) plan.links.push(r.name);
  // Links inside our own namespaces go with them; only those in others' need deleting.
  else if (!owned.has(r.ns)) {
    const links = plan.byNs.get(r.ns) ?? [];
    links.push(r.name);
    plan.byNs.set(r.ns, links);
  }
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_GRACE_MS);
  await exited;
  clearTimeout(timer);
}

// --- exit and signal handling

const live = new Set<NetScope>();
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
let installed = false;

function cleanupAll(): void {
  for (const scope of [...live]) scope.disposeSync();
}

function onSignal(signal: NodeJS.Signals): void {
  cleanupAll();
  // Re-raise with the default action unless someone else also handles the signal.
  if (process.listenerCount(signal) === 1) {
    uninstallExitHandlers();
    process.kill(process.pid, signal);
  }
}

function installExitHandlers(): void {
  if (installed) return;
  installed = true;
  process.on('exit', cleanupAll);
  for (const s of SIGNALS) process.on(s, onSignal);
}

function uninstallExitHandlers(): void {
  if (!installed) return;
  installed = false;
  process.off('exit', cleanupAll);
  for (const s of SIGNALS) process.off(s, onSignal);
}

// Listening on a signal replaces its default action, so stop as soon as nothing is owned.
function uninstallExitHandlersIfIdle(): void {
  if (live.size === 0) uninstallExitHandlers();
}

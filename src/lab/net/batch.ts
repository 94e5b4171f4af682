/**
 * `NetBatch`: many namespace and link operations through a few `ip -batch` processes instead
 * of one process per operation. Root-namespace lines go to one `ip -batch -`; each namespace's
 * lines to its own `ip -n <ns> -batch -`, those run concurrently.
 */
import { availableParallelism } from 'node:os';
import { ValidationError } from '../../errors.js';
import * as cmd from './commands.js';
import { NetError } from './errors.js';
import { forEachLimit, ipBatch } from './exec.js';
import type { NetRecorder, NetResource } from './netns.js';

interface Entry {
  readonly cmd: cmd.IpCommand;
  readonly creates?: readonly NetResource[];
  /** Other namespaces it affects besides its own ('' is the root namespace). */
  readonly alsoTouches?: readonly string[];
}

/**
 * One step of the schedule: the root namespace's lines (even steps) or the lines of several
 * namespaces, run concurrently (odd steps).
 */
type Step = Map<string | undefined, Entry[]>;

export interface BatchRunOptions {
  /** Namespaced `ip -batch` processes in flight (default: 4 per CPU). */
  readonly concurrency?: number;
}

/**
 * Operations queue up in call order and run on `run()`. Two operations that touch a common
 * namespace run in call order; the rest may run concurrently, so one pod's steps after
 * another's (veth, address, route) still become a handful of `ip -batch` processes.
 */
export class NetBatch {
  private readonly entries: Entry[] = [];

  /** @internal a scope passes its recorder so that what the batch creates is cleaned up. */
  constructor(private readonly recorder?: NetRecorder) {}

  get size(): number {
    return this.entries.length;
  }

  /** A namespace, with `lo` up unless `loopback: false`. */
  addNetns(name: string, opts: { loopback?: boolean } = {}): this {
    this.push({ cmd: cmd.netnsAdd(name), creates: [{ kind: 'netns', name }], alsoTouches: [name] });
    if (opts.loopback !== false) this.setLink(name, 'lo', { up: true });
    return this;
  }

  addVeth(spec: cmd.VethSpec): this {
    const c = cmd.vethAdd(spec);
    return this.push({
      cmd: c,
      alsoTouches: [cmd.nsName(spec.ns) ?? '', cmd.nsName(spec.peerNs) ?? ''],
      creates: [
        { kind: 'link', ns: cmd.nsName(spec.ns), name: spec.name },
        { kind: 'link', ns: cmd.nsName(spec.peerNs), name: spec.peer },
      ],
    });
  }

  addBridge(ns: cmd.NsLike, name: string, opts: { mtu?: number; mac?: string } = {}): this {
    const n = cmd.nsName(ns);
    return this.push({ cmd: cmd.bridgeAdd(n, name, opts), creates: [{ kind: 'link', ns: n, name }] });
  }

  setLink(ns: cmd.NsLike, name: string, settings: cmd.LinkSettings): this {
    return this.push({ cmd: cmd.linkSet(cmd.nsName(ns), name, settings) });
  }

  setUp(ns: cmd.NsLike, name: string): this {
    return this.setLink(ns, name, { up: true });
  }

  moveLink(from: cmd.NsLike, name: string, to: cmd.NsLike, newName?: string): this {
    const t = cmd.nsName(to);
    return this.push({
      cmd: cmd.linkMove(cmd.nsName(from), name, t, newName),
      creates: [{ kind: 'link', ns: t, name: newName ?? name }],
      alsoTouches: [t ?? ''],
    });
  }

  deleteLink(ns: cmd.NsLike, name: string): this {
    return this.push({ cmd: cmd.linkDel(cmd.nsName(ns), name) });
  }

  /** Plain `netns del`: delete root-side veth peers explicitly (`deleteLink`) before it. */
  deleteNetns(name: string): this {
    return this.push({ cmd: cmd.netnsDel(name), alsoTouches: [name] });
  }

  addAddress(ns: cmd.NsLike, dev: string, cidr: string, opts: cmd.AddressOptions = {}): this {
    return this.push({ cmd: cmd.addrAdd(cmd.nsName(ns), dev, cidr, opts) });
  }

  addRoute(ns: cmd.NsLike, route: cmd.RouteSpec): this {
    return this.push({ cmd: cmd.route('add', cmd.nsName(ns), route) });
  }

  replaceRoute(ns: cmd.NsLike, route: cmd.RouteSpec): this {
    return this.push({ cmd: cmd.route('replace', cmd.nsName(ns), route) });
  }

  /** A sysctl inside a (non-root) namespace. */
  sysctl(ns: cmd.NsLike, key: string, value: string | number): this {
    const n = cmd.nsName(ns);
    if (n === undefined)
      throw new ValidationError('sysctl', key, 'a batch sets sysctls only inside namespaces');
    return this.push({ cmd: cmd.sysctlSet(n, key, value) });
  }

  /**
   * Runs everything queued and empties the batch. Stops at the first failure with a NetError
   * naming the failing line; what was created before it is recorded with the batch's scope.
   */
  async run(opts: BatchRunOptions = {}): Promise<void> {
    const concurrency = Math.max(1, opts.concurrency ?? availableParallelism() * 4);
    const steps = this.schedule();
    this.entries.length = 0;
    for (const step of steps) {
      await forEachLimit([...step], concurrency, ([ns, entries]) => this.runGroup(ns, entries));
    }
  }

  private push(entry: Entry): this {
    this.entries.push(entry);
    return this;
  }

  /**
   * Places each entry at the earliest step after everything earlier that touches one of its
   * namespaces, or in the same group as that when it is the only one there, since a group
   * keeps its order. Root lines take even steps, namespaced ones odd steps.
   */
  private schedule(): Step[] {
    const steps: Step[] = [];
    /** Per namespace key: the latest step touching it and which groups there do. */
    const last = new Map<string, { step: number; groups: Set<string> }>();
    for (const e of this.entries) {
      const group = e.cmd.ns ?? '';
      const keys = [group, ...(e.alsoTouches ?? [])];
      let step = 0;
      for (const k of keys) {
        const l = last.get(k);
        if (l === undefined) continue;
        const shareable = l.groups.size === 1 && l.groups.has(group);
        step = Math.max(step, shareable ? l.step : l.step + 1);
      }
      const parity = e.cmd.ns === undefined ? 0 : 1;
      if (step % 2 !== parity) step++;
      while (steps.length <= step) steps.push(new Map());
      const at = steps[step] as Step;
      const list = at.get(e.cmd.ns);
      if (list === undefined) at.set(e.cmd.ns, [e]);
      else list.push(e);
      for (const k of keys) {
        const l = last.get(k);
        if (l !== undefined && l.step === step) l.groups.add(group);
        else last.set(k, { step, groups: new Set([group]) });
      }
    }
    return steps.filter((s) => s.size > 0);
  }

  private async runGroup(ns: string | undefined, entries: readonly Entry[]): Promise<void> {
    if (entries.length === 0) return;
    const { lines, origin } = batchLines(entries);
    let done = entries.length;
    try {
      await ipBatch(ns === undefined ? 'batch in root namespace' : `batch in netns ${ns}`, ns, lines);
    } catch (e) {
      // Without a line number ip did not get to report which line failed; recording all of
      // them errs towards cleaning up, and the names are ours.
      if (e instanceof NetError && e.line !== undefined) done = origin[e.line - 1] ?? 0;
      throw e;
    } finally {
      for (const entry of entries.slice(0, done))
        for (const r of entry.creates ?? []) this.recorder?.created(r);
    }
  }
}

/** The batch's lines, with each run of link deletions folded into one group deletion. */
function batchLines(entries: readonly Entry[]): { lines: string[]; origin: number[] } {
  const lines: string[] = [];
  /** For each line, the index of the entry it comes from. */
  const origin: number[] = [];
  let run: { names: string[]; first: number } | undefined;
  const flush = (): void => {
    if (run === undefined) return;
    for (const l of cmd.linkDelMany(run.names)) {
      lines.push(l);
      origin.push(run.first);
    }
    run = undefined;
  };
  entries.forEach((e, i) => {
    const a = e.cmd.args;
    if (a[0] === 'link' && a[1] === 'del' && a[2] === 'dev' && a[3] !== undefined) {
      run ??= { names: [], first: i };
      run.names.push(a[3]);
      return;
    }
    flush();
    lines.push(a.join(' '));
    origin.push(i);
  });
  flush();
  return { lines, origin };
}

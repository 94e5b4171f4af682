/** `NetNs`: a network namespace (or the root one) and the links, addresses, routes and sysctls in it. */
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { access, readdir, readFile, writeFile } from 'node:fs/promises';
import { KeyNotFoundError } from '../../errors.js';
import * as cmd from './commands.js';
import { NetError } from './errors.js';
import { type ExecOptions, type ExecResult, execFile, ip, ipBatch, ipJson } from './exec.js';
import { checkNetnsName, checkSysctl, NAME_PREFIX } from './names.js';

/** Where `ip netns` keeps its namespaces. */
export const NETNS_RUN_DIR = '/run/netns';

/** Something this library created, as a scope records it for cleanup. */
export type NetResource =
  | { readonly kind: 'netns'; readonly name: string }
  | { readonly kind: 'link'; readonly ns: string | undefined; readonly name: string };

/** Receives what a scope-owned handle creates. */
export interface NetRecorder {
  created(resource: NetResource): void;
  spawned(child: ChildProcess): void;
}

export interface Link {
  readonly ifindex: number;
  readonly name: string;
  /** `veth`, `bridge`, ...; undefined for plain devices such as `lo`. */
  readonly kind: string | undefined;
  readonly mtu: number;
  readonly mac: string;
  /** Administratively up. */
  readonly up: boolean;
  readonly operstate: string;
  readonly master: string | undefined;
  /** For a veth: the peer's ifindex (in the peer's namespace). */
  readonly peerIfindex: number | undefined;
}

export interface Address {
  readonly dev: string;
  readonly family: 4 | 6;
  readonly address: string;
  readonly prefixlen: number;
  readonly scope: string;
}

export interface Route {
  /** `default` or a prefix. */
  readonly dst: string;
  readonly via: string | undefined;
  readonly dev: string | undefined;
  readonly scope: string | undefined;
  readonly src: string | undefined;
  readonly flags: readonly string[];
}

interface IpLink {
  ifindex: number;
  ifname: string;
  flags?: string[];
  mtu: number;
  operstate?: string;
  address?: string;
  master?: string;
  link_index?: number;
  linkinfo?: { info_kind?: string };
}
interface IpAddr {
  ifname: string;
  addr_info?: { family: string; local: string; prefixlen: number; scope: string }[];
}
interface IpRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  scope?: string;
  prefsrc?: string;
  flags?: string[];
}

function toLink(l: IpLink): Link {
  return {
    ifindex: l.ifindex,
    name: l.ifname,
    kind: l.linkinfo?.info_kind,
    mtu: l.mtu,
    mac: l.address ?? '',
    up: l.flags?.includes('UP') ?? false,
    operstate: l.operstate ?? 'UNKNOWN',
    master: l.master,
    peerIfindex: l.link_index,
  };
}

function sysctlPath(key: string): string {
  // sysctl(8) convention: '.' separates, '/' stands for a '.' inside a name.
  return `/proc/sys/${key.replace(/[./]/g, (c) => (c === '.' ? '/' : '.'))}`;
}

/**
 * A network namespace by name, or the root namespace (`NetNs.root`). Handles are cheap; the
 * namespace exists independently of them. A handle obtained from a `NetScope` records what it
 * creates outside its own namespace, so the scope can remove it.
 */
export class NetNs {
  /** The namespace this process runs in. Only `hy`-prefixed links may be created or changed in it. */
  static readonly root = new NetNs(undefined);

  /** @internal use `NetNs.of`, `NetNs.create` or a `NetScope`. */
  constructor(
    /** Name under /run/netns, or undefined for the root namespace. */
    readonly name: string | undefined,
    private readonly recorder?: NetRecorder,
  ) {}

  get isRoot(): boolean {
    return this.name === undefined;
  }

  toString(): string {
    return this.name ?? '(root)';
  }

  /** A handle on an existing namespace; does not check that it exists. */
  static of(name: string): NetNs {
    checkNetnsName(name);
    return new NetNs(name);
  }

  /** Creates a namespace, with `lo` up unless `loopback: false`. Fails if it exists. */
  static async create(name: string, opts: { loopback?: boolean } = {}): Promise<NetNs> {
    const add = cmd.netnsAdd(name);
    await ip(add.what, undefined, add.args);
    const ns = new NetNs(name);
    if (opts.loopback !== false) await ns.setLink('lo', { up: true });
    return ns;
  }

  static async exists(name: string): Promise<boolean> {
    checkNetnsName(name);
    try {
      await access(`${NETNS_RUN_DIR}/${name}`);
      return true;
    } catch {
      return false;
    }
  }

  /** Names of namespaces starting with `prefix` (default: all `hy` ones), sorted. */
  static async list(prefix = NAME_PREFIX): Promise<string[]> {
    try {
      return (await readdir(NETNS_RUN_DIR)).filter((n) => n.startsWith(prefix)).sort();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
  }

  static async delete(name: string): Promise<void> {
    await NetNs.of(name).delete();
  }

  /**
   * Deletes the namespace. Its veths are deleted first, explicitly: the kernel would remove
   * them (and their peers elsewhere) only when the namespace is finally freed, asynchronously,
   * and never while a process still runs inside.
   */
  async delete(): Promise<void> {
    const name = this.requireNamed('delete');
    const del = cmd.netnsDel(name);
    if (!(await NetNs.exists(name))) {
      throw new NetError(`${del.what}: no such namespace`, { command: ['ip', ...del.args] });
    }
    const veths = await ipJson<IpLink>(`list veths in netns ${name}`, name, ['link', 'show', 'type', 'veth']);
    await ipBatch(`delete veths in netns ${name}`, name, cmd.linkDelMany(veths.map((l) => l.ifname)), true);
    await ip(del.what, undefined, del.args);
  }

  /** Runs a command inside the namespace (`ip netns exec`). Non-zero exit is returned, not thrown, unless `check`. */
  exec(command: string, args: readonly string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
    return execFile(this.argv(command, args), opts);
  }

  /** Starts a long-running process inside the namespace. A scope-owned handle kills it on dispose. */
  spawn(command: string, args: readonly string[] = [], opts: SpawnOptions = {}): ChildProcess {
    const [c, ...a] = this.argv(command, args);
    const child = spawn(c as string, a, opts);
    this.recorder?.spawned(child);
    return child;
  }

  private argv(command: string, args: readonly string[]): string[] {
    return this.name === undefined
      ? [command, ...args]
      : ['ip', 'netns', 'exec', this.name, command, ...args];
  }

  /** `ip -n <this> args...`, for anything the typed methods do not cover. Returns stdout. */
  ip(...args: string[]): Promise<string> {
    return ip(`ip in ${this}`, this.name, args);
  }

  // --- links

  /**
   * Creates a veth pair with `name` in this namespace and `peer` in `peerNs` (default: this
   * namespace too). Both ends start down.
   */
  async addVeth(
    name: string,
    opts: { peer: string; peerNs?: NetNs; mtu?: number; mac?: string; peerMac?: string },
  ): Promise<void> {
    const peerNs = opts.peerNs ?? this;
    await this.run(
      cmd.vethAdd({
        name,
        ns: this.name,
        peer: opts.peer,
        peerNs: peerNs.name,
        ...(opts.mtu === undefined ? {} : { mtu: opts.mtu }),
        ...(opts.mac === undefined ? {} : { mac: opts.mac }),
        ...(opts.peerMac === undefined ? {} : { peerMac: opts.peerMac }),
      }),
    );
    this.recorder?.created({ kind: 'link', ns: this.name, name });
    this.recorder?.created({ kind: 'link', ns: peerNs.name, name: opts.peer });
  }

  async addBridge(name: string, opts: { mtu?: number; mac?: string } = {}): Promise<void> {
    await this.run(cmd.bridgeAdd(this.name, name, opts));
    this.recorder?.created({ kind: 'link', ns: this.name, name });
  }

  /** Moves a link into `to`, optionally renaming it on the way. It arrives down and without addresses. */
  async moveLink(name: string, to: NetNs, newName?: string): Promise<void> {
    await this.run(cmd.linkMove(this.name, name, to.name, newName));
    this.recorder?.created({ kind: 'link', ns: to.name, name: newName ?? name });
  }

  async setLink(name: string, settings: cmd.LinkSettings): Promise<void> {
    await this.run(cmd.linkSet(this.name, name, settings));
  }

  setUp(name: string): Promise<void> {
    return this.setLink(name, { up: true });
  }

  setDown(name: string): Promise<void> {
    return this.setLink(name, { up: false });
  }

  async deleteLink(name: string): Promise<void> {
    await this.run(cmd.linkDel(this.name, name));
  }

  async links(): Promise<Link[]> {
    return (await ipJson<IpLink>(`list links in ${this}`, this.name, ['-d', 'link', 'show'])).map(toLink);
  }

  /** The link called `name`, or undefined. */
  async link(name: string): Promise<Link | undefined> {
    try {
      const [l] = await ipJson<IpLink>(`show link ${name} in ${this}`, this.name, [
        '-d',
        'link',
        'show',
        'dev',
        name,
      ]);
      return l === undefined ? undefined : toLink(l);
    } catch (e) {
      if (e instanceof NetError && /does not exist/.test(e.stderr)) return undefined;
      throw e;
    }
  }

  async ifindex(name: string): Promise<number> {
    const l = await this.link(name);
    if (l === undefined) throw new KeyNotFoundError(`no link ${name} in ${this}`);
    return l.ifindex;
  }

  // --- addresses and routes

  async addAddress(dev: string, cidr: string, opts: cmd.AddressOptions = {}): Promise<void> {
    await this.run(cmd.addrAdd(this.name, dev, cidr, opts));
  }

  async deleteAddress(dev: string, cidr: string): Promise<void> {
    await this.run(cmd.addrDel(this.name, dev, cidr));
  }

  async addresses(dev?: string): Promise<Address[]> {
    const args = dev === undefined ? ['addr', 'show'] : ['addr', 'show', 'dev', dev];
    const links = await ipJson<IpAddr>(`list addresses in ${this}`, this.name, args);
    return links.flatMap((l) =>
      (l.addr_info ?? []).map((a) => ({
        dev: l.ifname,
        family: a.family === 'inet6' ? (6 as const) : (4 as const),
        address: a.local,
        prefixlen: a.prefixlen,
        scope: a.scope,
      })),
    );
  }

  async addRoute(route: cmd.RouteSpec): Promise<void> {
    await this.run(cmd.route('add', this.name, route));
  }

  /** Adds or replaces: idempotent. */
  async replaceRoute(route: cmd.RouteSpec): Promise<void> {
    await this.run(cmd.route('replace', this.name, route));
  }

  async deleteRoute(route: cmd.RouteSpec): Promise<void> {
    await this.run(cmd.route('del', this.name, route));
  }

  /** Routes of the main table. */
  async routes(family: 4 | 6 = 4): Promise<Route[]> {
    const rs = await ipJson<IpRoute>(`list routes in ${this}`, this.name, [`-${family}`, 'route', 'show']);
    return rs.map((r) => ({
      dst: r.dst,
      via: r.gateway,
      dev: r.dev,
      scope: r.scope,
      src: r.prefsrc,
      flags: r.flags ?? [],
    }));
  }

  // --- sysctls

  /** Sets a sysctl such as `net.ipv4.ip_forward` or `net.ipv4.conf.all.rp_filter` in this namespace. */
  async sysctl(key: string, value: string | number): Promise<void> {
    if (this.name === undefined) {
      cmd.checkRootSysctl(key, String(value));
      await writeFile(sysctlPath(key), String(value));
      return;
    }
    await this.run(cmd.sysctlSet(this.name, key, value));
  }

  async readSysctl(key: string): Promise<string> {
    checkSysctl(key, '0');
    if (this.name === undefined) return (await readFile(sysctlPath(key), 'utf8')).trim();
    const r = await this.exec('sysctl', ['-n', key]);
    if (r.code !== 0)
      throw NetError.commandFailed(`read ${key} in ${this}`, this.argv('sysctl', ['-n', key]), r);
    return r.stdout.trim();
  }

  private async run(c: cmd.IpCommand): Promise<void> {
    await ip(c.what, c.ns, c.args);
  }

  private requireNamed(what: string): string {
    if (this.name === undefined) throw new NetError(`${what}: refusing to act on the root namespace`);
    return this.name;
  }
}

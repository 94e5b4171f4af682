/**
 * Host-scope IPAM: addresses for this node's pods from its pod CIDR. Every allocation is
 * on disk before it is handed out, so a restarted (or SIGKILLed) agent never gives an
 * address twice. The first address is the node's (the pods' gateway), the last the
 * broadcast; owners (container id + interface) get the same address back if they ask again.
 */
import { ValidationError } from '../errors.js';
import { intToIpv4, ipv4ToInt, parseCidr } from '../policy/parse.js';
import { readJson, writeJsonAtomic } from './state.js';

export interface Allocation {
  ip: string;
  owner: string;
}

export class IpamExhaustedError extends Error {
  override name = 'IpamExhaustedError';
}

export class HostScopeIpam {
  readonly cidr: string;
  readonly gateway: string;
  readonly #first: number;
  readonly #last: number;
  readonly #byIp = new Map<string, string>();
  readonly #file: string;

  constructor(cidr: string, stateFile: string) {
    this.cidr = parseCidr(
      {
        fail: (f, r) => {
          throw new ValidationError('ipam', f, r);
        },
      },
      cidr,
      'podCIDR',
    );
    const [net, len] = this.cidr.split('/') as [string, string];
    const bits = Number(len);
    if (bits > 30)
      throw new ValidationError('ipam', 'podCIDR', `${cidr} leaves no room for pods (needs /30 or larger)`);
    const base = ipv4ToInt(net);
    this.gateway = intToIpv4(base + 1);
    this.#first = base + 2;
    this.#last = base + 2 ** (32 - bits) - 2;
    this.#file = stateFile;
    for (const a of readJson<Allocation[]>(stateFile, [])) this.#byIp.set(a.ip, a.owner);
  }

  /** The owner's address, allocating the lowest free one if it has none. */
  allocate(owner: string): string {
    for (const [ip, o] of this.#byIp) if (o === owner) return ip;
    for (let n = this.#first; n <= this.#last; n++) {
      const ip = intToIpv4(n >>> 0);
      if (this.#byIp.has(ip)) continue;
      this.#byIp.set(ip, owner);
      this.#save();
      return ip;
    }
    throw new IpamExhaustedError(`pod CIDR ${this.cidr} is exhausted (${this.#byIp.size} addresses in use)`);
  }

  /** Releases by address or by owner; returns what was released. */
  release(ipOrOwner: string): string[] {
    const gone = [...this.#byIp].filter(([ip, o]) => ip === ipOrOwner || o === ipOrOwner).map(([ip]) => ip);
    for (const ip of gone) this.#byIp.delete(ip);
    if (gone.length) this.#save();
    return gone;
  }

  allocations(): Allocation[] {
    return [...this.#byIp].map(([ip, owner]) => ({ ip, owner }));
  }

  get capacity(): number {
    return this.#last - this.#first + 1;
  }

  #save(): void {
    writeJsonAtomic(this.#file, this.allocations());
  }
}

/**
 * What the lab's cluster DNS answers: Services as `<svc>.<ns>.svc.<domain>` (ClusterIP, or
 * the ready pod IPs of a headless service), pods as `<a-b-c-d>.<ns>.pod.<domain>`, and the
 * lab world's names. Everything else is NXDOMAIN: the lab has no internet to forward to.
 */
import {
  canonicalName,
  type DnsMessage,
  RCode,
  type ResourceRecord,
  RRType,
  responseTo,
} from '../../dns/message.js';

export interface ZoneData {
  /** Cluster domain, `cluster.local`. */
  domain: string;
  services: { name: string; namespace: string; clusterIP?: string; headlessIPs?: string[] }[];
  /** Names outside the cluster domain (the lab world). */
  hosts: { name: string; ip: string }[];
  /** TTL of answers, seconds. */
  ttl: number;
}

export class Zone {
  readonly #a = new Map<string, string[]>();
  readonly #domain: string;
  readonly #ttl: number;

  constructor(data: ZoneData) {
    this.#domain = canonicalName(data.domain);
    this.#ttl = data.ttl;
    const add = (name: string, ip: string) => {
      const n = canonicalName(name);
      this.#a.set(n, [...(this.#a.get(n) ?? []), ip]);
    };
    for (const s of data.services) {
      const name = `${s.name}.${s.namespace}.svc.${this.#domain}`;
      if (s.clusterIP && s.clusterIP !== 'None') add(name, s.clusterIP);
      for (const ip of s.headlessIPs ?? []) add(name, ip);
      if (!this.#a.has(canonicalName(name))) this.#a.set(canonicalName(name), []);
    }
    for (const h of data.hosts) add(h.name, h.ip);
  }

  /** The answer to a query, as an authoritative server for the cluster domain. */
  answer(q: DnsMessage): DnsMessage {
    if (q.opcode !== 0) return responseTo(q, RCode.NotImp);
    const question = q.questions[0];
    if (q.questions.length !== 1 || !question) return responseTo(q, RCode.FormErr);
    const name = canonicalName(question.name);
    const r = responseTo(q);
    r.aa = name === this.#domain || name.endsWith(`.${this.#domain}`);
    const ips = this.#lookup(name);
    if (ips === undefined) {
      r.rcode = RCode.NXDomain;
      r.authorities.push(this.#soa());
      return r;
    }
    if (question.type === RRType.A || question.type === RRType.ANY) {
      for (const ip of ips) r.answers.push(this.#record(question.name, ip));
    } else {
      // The name exists but has no records of this type: NOERROR with no answers (NODATA).
      r.authorities.push(this.#soa());
    }
    return r;
  }

  #lookup(name: string): string[] | undefined {
    const direct = this.#a.get(name);
    if (direct) return direct;
    // 10-244-1-5.<ns>.pod.cluster.local
    const pod = new RegExp(
      `^(\\d{1,3})-(\\d{1,3})-(\\d{1,3})-(\\d{1,3})\\.[a-z0-9-]+\\.pod\\.${escapeRegex(this.#domain)}$`,
    ).exec(name);
    if (pod?.slice(1).every((o) => Number(o) <= 255)) return [pod.slice(1).join('.')];
    return undefined;
  }

  #record(name: string, address: string): ResourceRecord {
    return { name, type: RRType.A, class: 1, ttl: this.#ttl, data: { kind: 'a', address } };
  }

  #soa(): ResourceRecord {
    return {
      name: this.#domain,
      type: RRType.SOA,
      class: 1,
      ttl: this.#ttl,
      data: {
        kind: 'soa',
        mname: `ns.dns.${this.#domain}`,
        rname: `hostmaster.${this.#domain}`,
        serial: 1,
        refresh: 7200,
        retry: 1800,
        expire: 86400,
        minimum: this.#ttl,
      },
    };
  }
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * kube-proxy's iptables mode, reproduced for the services benchmark: the nat table's
 * KUBE-SERVICES dispatch (one rule per service port, matched in order), a KUBE-SVC- chain
 * per service spreading over backends with `statistic --mode random`, and a KUBE-SEP-
 * chain per endpoint doing the DNAT, named by hash as kube-proxy names them. Written in
 * iptables-restore format.
 */
import { createHash } from 'node:crypto';

export interface BenchService {
  namespace: string;
  name: string;
  ip: string;
  port: number;
  backends: { ip: string; port: number }[];
}

/** kube-proxy's chain names: a prefix and 16 characters of base32(sha256). */
function chain(prefix: string, key: string): string {
  const digest = createHash('sha256').update(key).digest();
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of digest) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5 && out.length < 16) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    if (out.length >= 16) break;
  }
  return `${prefix}${out}`;
}

export function iptablesRules(services: readonly BenchService[]): string {
  const chains = [':KUBE-SERVICES - [0:0]', ':KUBE-MARK-MASQ - [0:0]', ':KUBE-POSTROUTING - [0:0]'];
  const rules = [
    '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
    '-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000',
    '-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN',
    '-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000',
    '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE',
  ];
  for (const s of services) {
    const portName = `${s.namespace}/${s.name}:http`;
    const svc = chain('KUBE-SVC-', `${portName}tcp`);
    chains.push(`:${svc} - [0:0]`);
    rules.push(
      `-A KUBE-SERVICES -d ${s.ip}/32 -p tcp -m comment --comment "${portName} cluster IP" -m tcp --dport ${s.port} -j ${svc}`,
    );
    s.backends.forEach((b, i) => {
      const sep = chain('KUBE-SEP-', `${portName}tcp${b.ip}:${b.port}`);
      chains.push(`:${sep} - [0:0]`);
      const left = s.backends.length - i;
      const stat = left > 1 ? ` -m statistic --mode random --probability ${(1 / left).toFixed(11)}` : '';
      rules.push(`-A ${svc} -m comment --comment "${portName} -> ${b.ip}:${b.port}"${stat} -j ${sep}`);
      rules.push(`-A ${sep} -s ${b.ip}/32 -m comment --comment "${portName}" -j KUBE-MARK-MASQ`);
      rules.push(
        `-A ${sep} -p tcp -m comment --comment "${portName}" -m tcp -j DNAT --to-destination ${b.ip}:${b.port}`,
      );
    });
  }
  return ['*nat', ...chains, ...rules, 'COMMIT', ''].join('\n');
}

/**
 * Hubble's metrics from flows, in Prometheus text format with Hubble's names and labels
 * (`hubble_flows_processed_total`, `hubble_drop_total`, `hubble_tcp_flags_total`,
 * `hubble_port_distribution_total`, `hubble_icmp_total`, `hubble_lost_events_total`),
 * enabled per the Helm values' `hubble.metrics.enabled` list, as the tutorial sets it.
 */
import type { Flow } from './flow.js';

export const METRIC_NAMES = ['dns', 'drop', 'tcp', 'flow', 'port-distribution', 'icmp', 'http'] as const;
export type MetricName = (typeof METRIC_NAMES)[number];

type Key = string;

class Counter {
  readonly #values = new Map<Key, number>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly labels: readonly string[],
  ) {}

  inc(values: readonly string[], by = 1): void {
    const k = JSON.stringify(values);
    this.#values.set(k, (this.#values.get(k) ?? 0) + by);
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    for (const [k, v] of [...this.#values].sort(([a], [b]) => a.localeCompare(b))) {
      const vals = JSON.parse(k) as string[];
      const labels = this.labels.map((l, i) => `${l}="${escapeLabel(vals[i] ?? '')}"`).join(',');
      lines.push(`${this.name}${labels ? `{${labels}}` : ''} ${v}`);
    }
    return `${lines.join('\n')}\n`;
  }
}

const escapeLabel = (v: string) => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');

/** Parses `hubble.metrics.enabled` entries such as `dns`, `drop:sourceContext=pod` (options are accepted, contexts not yet applied). */
export function parseEnabled(entries: readonly string[]): { enabled: Set<MetricName>; unknown: string[] } {
  const enabled = new Set<MetricName>();
  const unknown: string[] = [];
  for (const e of entries) {
    const name = e.split(':')[0] as MetricName;
    if ((METRIC_NAMES as readonly string[]).includes(name)) enabled.add(name);
    else unknown.push(e);
  }
  return { enabled, unknown };
}

export class HubbleMetrics {
  readonly #enabled: Set<MetricName>;
  readonly #flows = new Counter('hubble_flows_processed_total', 'Total number of flows processed', [
    'type',
    'subtype',
    'verdict',
  ]);
  readonly #drops = new Counter('hubble_drop_total', 'Number of drops', ['reason', 'protocol']);
  readonly #tcp = new Counter('hubble_tcp_flags_total', 'TCP flag occurrences', ['flag', 'family']);
  readonly #ports = new Counter(
    'hubble_port_distribution_total',
    'Numbers of packets distributed by destination port',
    ['protocol', 'port'],
  );
  readonly #icmp = new Counter('hubble_icmp_total', 'Number of ICMP messages', ['family', 'type']);
  readonly #lost = new Counter('hubble_lost_events_total', 'Number of lost events', ['source']);

  constructor(enabled: Iterable<MetricName> = METRIC_NAMES) {
    this.#enabled = new Set(enabled);
  }

  add(f: Flow): void {
    const l4 = f.l4;
    const proto = !l4
      ? 'Unknown'
      : 'TCP' in l4
        ? 'TCP'
        : 'UDP' in l4
          ? 'UDP'
          : 'SCTP' in l4
            ? 'SCTP'
            : 'ICMPv4' in l4
              ? 'ICMPv4'
              : 'ICMPv6' in l4
                ? 'ICMPv6'
                : 'Unknown';
    const family = f.IP?.ipVersion === 'IPv6' ? 'IPv6' : 'IPv4';
    if (this.#enabled.has('flow')) {
      const type =
        f.Type === 'L7'
          ? 'L7'
          : f.event_type?.type === 1
            ? 'Drop'
            : f.event_type?.type === 4
              ? 'Trace'
              : f.event_type?.type === 5
                ? 'PolicyVerdict'
                : 'L3_L4';
      this.#flows.inc([
        type,
        f.Type === 'L7' ? 'HTTP' : (f.trace_observation_point ?? ''),
        f.verdict ?? 'VERDICT_UNKNOWN',
      ]);
    }
    if (this.#enabled.has('drop') && f.verdict === 'DROPPED' && f.drop_reason_desc)
      this.#drops.inc([f.drop_reason_desc, proto]);
    if (this.#enabled.has('tcp') && l4 && 'TCP' in l4) {
      for (const [flag, on] of Object.entries(l4.TCP.flags ?? {})) if (on) this.#tcp.inc([flag, family]);
    }
    if (this.#enabled.has('port-distribution') && f.verdict !== 'DROPPED' && !f.is_reply) {
      const p = !l4 ? undefined : 'TCP' in l4 ? l4.TCP : 'UDP' in l4 ? l4.UDP : undefined;
      if (p?.destination_port) this.#ports.inc([proto, String(p.destination_port)]);
    }
    if (this.#enabled.has('icmp')) {
      const icmp = !l4 ? undefined : 'ICMPv4' in l4 ? l4.ICMPv4 : 'ICMPv6' in l4 ? l4.ICMPv6 : undefined;
      if (icmp) this.#icmp.inc([family, String(icmp.type ?? 0)]);
    }
  }

  lost(source: string, n: number): void {
    this.#lost.inc([source], n);
  }

  /** The exposition text; `extra` carries the agent's own metrics. */
  render(extra = ''): string {
    const parts = [this.#lost.render()];
    if (this.#enabled.has('flow')) parts.push(this.#flows.render());
    if (this.#enabled.has('drop')) parts.push(this.#drops.render());
    if (this.#enabled.has('tcp')) parts.push(this.#tcp.render());
    if (this.#enabled.has('port-distribution')) parts.push(this.#ports.render());
    if (this.#enabled.has('icmp')) parts.push(this.#icmp.render());
    return parts.join('') + extra;
  }
}

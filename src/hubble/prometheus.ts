/**
 * Prometheus metric families in the text exposition format (version 0.0.4), as
 * client_golang writes them: `# HELP`/`# TYPE`, label pairs sorted by name (a histogram's
 * `le` last), series in a stable order. Counting is a map update keyed by the label
 * values, cheap enough for every flow.
 */

const SEP = '\u0000';

const escapeLabel = (v: string) => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
const escapeHelp = (v: string) => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');

/** Go's strconv.FormatFloat(v, 'g', -1, 64) for the values a registry prints. */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Number.POSITIVE_INFINITY) return '+Inf';
  if (v === Number.NEGATIVE_INFINITY) return '-Inf';
  return String(v);
}

abstract class Family {
  /** Label names in output order (sorted), and where each sits in the caller's order. */
  readonly #order: number[];
  readonly #sorted: string[];

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
  ) {
    // Go's byte order, not the locale's.
    this.#order = labelNames
      .map((_, i) => i)
      .sort((a, b) => (labelNames[a]! < labelNames[b]! ? -1 : labelNames[a]! > labelNames[b]! ? 1 : 0));
    this.#sorted = this.#order.map((i) => labelNames[i]!);
  }

  protected key(values: readonly string[]): string {
    if (values.length !== this.labelNames.length)
      throw new Error(`${this.name}: ${values.length} label values for ${this.labelNames.length} labels`);
    return values.join(SEP);
  }

  /** `{a="x",b="y"}` (or '') for a key, with extra pairs appended unsorted (a histogram's `le`). */
  protected labels(key: string, extra = ''): string {
    const vals = this.labelNames.length ? key.split(SEP) : [];
    const pairs = this.#order.map((i, j) => `${this.#sorted[j]}="${escapeLabel(vals[i] ?? '')}"`);
    if (extra) pairs.push(extra);
    return pairs.length ? `{${pairs.join(',')}}` : '';
  }

  protected header(type: string): string {
    return `# HELP ${this.name} ${escapeHelp(this.help)}\n# TYPE ${this.name} ${type}\n`;
  }

  abstract render(): string;
}

/** A monotonically increasing count per label set. */
export class Counter extends Family {
  readonly #values = new Map<string, number>();

  inc(values: readonly string[] = [], by = 1): void {
    const k = this.key(values);
    this.#values.set(k, (this.#values.get(k) ?? 0) + by);
  }

  /** Sets the total (for counts kept elsewhere, e.g. the ring's lost events). */
  set(values: readonly string[], total: number): void {
    this.#values.set(this.key(values), total);
  }

  get(values: readonly string[] = []): number {
    return this.#values.get(this.key(values)) ?? 0;
  }

  render(): string {
    let out = this.header('counter');
    for (const k of [...this.#values.keys()].sort())
      out += `${this.name}${this.labels(k)} ${formatValue(this.#values.get(k)!)}\n`;
    return out;
  }
}

/** A value that goes up and down, set as a whole at render time. */
export class Gauge extends Family {
  readonly #values = new Map<string, number>();

  set(values: readonly string[], v: number): void {
    this.#values.set(this.key(values), v);
  }

  clear(): void {
    this.#values.clear();
  }

  render(): string {
    let out = this.header('gauge');
    for (const k of [...this.#values.keys()].sort())
      out += `${this.name}${this.labels(k)} ${formatValue(this.#values.get(k)!)}\n`;
    return out;
  }
}

/** client_golang's DefBuckets. */
export const DEFAULT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] as const;

/** Observations in cumulative buckets, with their sum and count. */
export class Histogram extends Family {
  readonly #series = new Map<string, { counts: number[]; sum: number; count: number }>();

  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    readonly buckets: readonly number[] = DEFAULT_BUCKETS,
  ) {
    super(name, help, labelNames);
  }

  observe(values: readonly string[], v: number): void {
    const k = this.key(values);
    let s = this.#series.get(k);
    if (!s) {
      s = { counts: this.buckets.map(() => 0), sum: 0, count: 0 };
      this.#series.set(k, s);
    }
    // Buckets are cumulative at render time: count the first that holds the value.
    const i = this.buckets.findIndex((b) => v <= b);
    if (i >= 0) s.counts[i]!++;
    s.sum += v;
    s.count++;
  }

  render(): string {
    let out = this.header('histogram');
    for (const k of [...this.#series.keys()].sort()) {
      const s = this.#series.get(k)!;
      let cum = 0;
      this.buckets.forEach((b, i) => {
        cum += s.counts[i]!;
        out += `${this.name}_bucket${this.labels(k, `le="${formatValue(b)}"`)} ${cum}\n`;
      });
      out += `${this.name}_bucket${this.labels(k, 'le="+Inf"')} ${s.count}\n`;
      out += `${this.name}_sum${this.labels(k)} ${formatValue(s.sum)}\n`;
      out += `${this.name}_count${this.labels(k)} ${s.count}\n`;
    }
    return out;
  }
}

/** Benchmark results: printed as a table and written to bench/results/<name>.json. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface Figure {
  name: string;
  value: number;
  unit: string;
  /** The same figure for the baseline measured in the same run. */
  baseline?: number;
  /** value / baseline. */
  ratio?: number;
}

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '../..');

export function figure(name: string, value: number, unit: string, baseline?: number): Figure {
  const f: Figure = { name, value: round(value), unit };
  if (baseline !== undefined) {
    f.baseline = round(baseline);
    f.ratio = round(value / baseline, 3);
  }
  return f;
}

function round(v: number, digits = 4): number {
  if (!Number.isFinite(v) || v === 0) return v;
  const scale = 10 ** Math.max(0, digits - Math.ceil(Math.log10(Math.abs(v))));
  return Math.round(v * scale) / scale;
}

export function writeResults(bench: string, figures: Figure[]): string {
  const path = join(repoRoot, 'bench/results', `${bench}.json`);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, JSON.stringify(figures, null, 2) + '\n');
  const w = Math.max(...figures.map((f) => f.name.length));
  for (const f of figures) {
    const base = f.baseline === undefined ? '' : `   baseline ${f.baseline} ${f.unit}   ratio ${f.ratio}`;
    console.log(`${f.name.padEnd(w)}   ${String(f.value).padStart(12)} ${f.unit}${base}`);
  }
  console.log(`wrote ${path}`);
  return path;
}

/** Percentile of sorted-or-not samples (nearest rank). */
export function percentile(samples: readonly number[], p: number): number {
  const s = [...samples].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? Number.NaN;
}

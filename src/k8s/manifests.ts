/**
 * Manifests from files and folders: every YAML document with where it came from, so an
 * error can name the file and the document index. A document that does not parse is
 * reported and the others still load.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';

export interface ManifestDoc {
  file: string;
  /** 0-based position in the file. */
  index: number;
  kind: string;
  apiVersion: string;
  name: string;
  namespace?: string;
  object: Record<string, unknown>;
}

export interface ManifestError {
  file: string;
  index: number;
  message: string;
}

export interface LoadedManifests {
  docs: ManifestDoc[];
  errors: ManifestError[];
}

function filesUnder(path: string): string[] {
  const st = statSync(path);
  if (!st.isDirectory()) return [path];
  return readdirSync(path)
    .sort()
    .flatMap((e) => {
      const p = join(path, e);
      if (statSync(p).isDirectory()) return filesUnder(p);
      return /\.(ya?ml|json)$/i.test(e) ? [p] : [];
    });
}

/** Parses YAML text (one or more documents); `List` kinds are flattened to their items. */
export function parseManifests(text: string, file: string): LoadedManifests {
  const docs: ManifestDoc[] = [];
  const errors: ManifestError[] = [];
  parseAllDocuments(text).forEach((d, index) => {
    if (d.errors.length) {
      errors.push({ file, index, message: d.errors.map((e) => e.message).join('; ') });
      return;
    }
    const obj = d.toJS() as unknown;
    if (obj === null || obj === undefined) return;
    const push = (o: unknown) => {
      if (typeof o !== 'object' || o === null || Array.isArray(o)) {
        errors.push({ file, index, message: 'a manifest must be a YAML mapping' });
        return;
      }
      const r = o as Record<string, unknown>;
      if (r.kind === 'List' && Array.isArray(r.items)) {
        r.items.forEach(push);
        return;
      }
      const meta = (r.metadata ?? {}) as Record<string, unknown>;
      if (typeof r.kind !== 'string' || typeof r.apiVersion !== 'string') {
        errors.push({ file, index, message: 'kind and apiVersion are required' });
        return;
      }
      if (typeof meta.name !== 'string' || meta.name === '') {
        errors.push({ file, index, message: `${r.kind}: metadata.name is required` });
        return;
      }
      const doc: ManifestDoc = {
        file,
        index,
        kind: r.kind,
        apiVersion: r.apiVersion,
        name: meta.name,
        object: r,
      };
      if (typeof meta.namespace === 'string') doc.namespace = meta.namespace;
      docs.push(doc);
    };
    push(obj);
  });
  return { docs, errors };
}

/** Loads every YAML/JSON file under the given files and folders. */
export function loadManifests(paths: readonly string[]): LoadedManifests {
  const out: LoadedManifests = { docs: [], errors: [] };
  for (const p of paths) {
    let files: string[];
    try {
      files = filesUnder(p);
    } catch (err) {
      out.errors.push({ file: p, index: 0, message: (err as Error).message });
      continue;
    }
    for (const f of files) {
      const r = parseManifests(readFileSync(f, 'utf8'), f);
      out.docs.push(...r.docs);
      out.errors.push(...r.errors);
    }
  }
  return out;
}

/**
 * What every controller is handed, and how a controller claims the objects it manages, as
 * client-go's ControllerRefManager: it keeps what it controls and still selects, adopts
 * orphans its selector matches, and releases what it controls but no longer selects.
 */
import type { Api, KObject, ResourceType } from '../../../apiserver/index.js';
import type { LabelSelector } from '../../../k8s/selector.js';
import type { EventRecorder } from './events.js';
import type { ErrorReporter, Informers } from './framework.js';
import { controllerOf, controllerRef, selects } from './objects.js';

export interface ControllerContext {
  api: Api;
  informers: Informers;
  /** The event recorder of a component (`deployment-controller`, `default-scheduler`...). */
  recorder(component: string): EventRecorder;
  onError: ErrorReporter;
}

export function resourceOf(api: Api, group: string, plural: string): ResourceType {
  const r = api.resource(group, plural);
  if (!r) throw new Error(`the API serves no ${group}/${plural}`);
  return r;
}

/**
 * The candidates `owner` controls after adopting and releasing. Writes carry the
 * candidate's resourceVersion, so a claim that races with another writer fails with a
 * conflict and is retried on fresh data.
 */
export function claim<T extends KObject>(
  api: Api,
  r: ResourceType,
  owner: KObject,
  selector: LabelSelector,
  candidates: readonly T[],
): T[] {
  const uid = owner.metadata.uid;
  const deleting = Boolean(owner.metadata.deletionTimestamp);
  const claimed: T[] = [];
  for (const o of candidates) {
    const ref = controllerOf(o);
    const matched = selects(selector, o.metadata.labels);
    const refs = o.metadata.ownerReferences ?? [];
    const write = (ownerReferences: unknown) =>
      api.patch(r, o.metadata.namespace, o.metadata.name ?? '', 'merge', {
        metadata: { ownerReferences, resourceVersion: o.metadata.resourceVersion },
      }).object as T;
    if (ref) {
      if (ref.uid !== uid) continue;
      if (matched) claimed.push(o);
      else if (!deleting) {
        const rest = refs.filter((x) => x.uid !== uid);
        write(rest.length ? rest : null);
      }
    } else if (matched && !deleting && !o.metadata.deletionTimestamp) {
      claimed.push(write([...refs, controllerRef(owner)]));
    }
  }
  return claimed;
}

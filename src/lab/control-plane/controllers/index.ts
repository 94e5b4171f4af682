/**
 * The lab's controller manager, in the API server's process: the Deployment, ReplicaSet
 * and EndpointSlice controllers and the scheduler, each a reconcile loop over shared
 * informers, recording Events as Kubernetes' do.
 *
 * ```ts
 * const controllers = startControllers(api, { resyncSeconds: 300 });
 * await controllers.settled(); // every queue drained
 * controllers.close();
 * ```
 */
import type { Api } from '../../../apiserver/index.js';
import { deploymentController } from './deployment.js';
import { endpointSliceController } from './endpointslice.js';
import { EventRecorder } from './events.js';
import { type Controller, type ErrorReporter, Informers, isExpectedRace } from './framework.js';
import type { ControllerContext } from './ownership.js';
import { replicaSetController } from './replicaset.js';
import { scheduler } from './scheduler.js';

export { planSlices, type SlicePlan } from './endpointslice.js';
export type {
  Deployment,
  DeploymentStatus,
  Endpoint,
  EndpointSlice,
  Node,
  Pod,
  ReplicaSet,
  ReplicaSetStatus,
  Service,
} from './objects.js';
export { podTemplateHash } from './objects.js';
export { deletionOrder } from './replicaset.js';
export { type Placement, place, unschedulableMessage } from './scheduler.js';

export type ControllerName = 'deployment' | 'replicaset' | 'scheduler' | 'endpointslice';

const CONTROLLERS: Record<ControllerName, (ctx: ControllerContext) => Controller> = {
  deployment: deploymentController,
  replicaset: replicaSetController,
  scheduler,
  endpointslice: endpointSliceController,
};

export interface ControllerManagerOptions {
  /** Seconds between re-reconciling every object, to repair drift no event announced; 0 never. Default 300. */
  resyncSeconds?: number;
  /** The controllers to run; all by default. */
  controllers?: readonly ControllerName[];
  /**
   * Told of unexpected reconcile errors (the key is retried with backoff either way).
   * Conflicts and objects that vanished mid-sync are ordinary races and not reported.
   * Default: a line on stderr.
   */
  onError?: ErrorReporter;
}

export interface ControllerManager {
  /** Reconciles every object again now. */
  resync(): void;
  /** Resolves once every queue is empty and no reconcile is running (delayed retries aside). */
  settled(): Promise<void>;
  close(): void;
}

const logError: ErrorReporter = (controller, key, err) => {
  const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
  process.stderr.write(`hypha controllers: ${controller} ${key}: ${message}\n`);
};

export function startControllers(api: Api, opts: ControllerManagerOptions = {}): ControllerManager {
  const report = opts.onError ?? logError;
  const onError: ErrorReporter = (controller, key, err) => {
    if (!isExpectedRace(err)) report(controller, key, err);
  };
  const informers = new Informers(api, (err) => onError('informer', '', err));
  const recorders = new Map<string, EventRecorder>();
  const ctx: ControllerContext = {
    api,
    informers,
    onError,
    recorder: (component) => {
      let r = recorders.get(component);
      if (!r) {
        r = new EventRecorder(api, component, (err) => onError(component, 'event', err));
        recorders.set(component, r);
      }
      return r;
    },
  };
  const names = opts.controllers ?? (Object.keys(CONTROLLERS) as ControllerName[]);
  const controllers = names.map((n) => CONTROLLERS[n](ctx));
  // Informers start after every handler is registered: their first events fill the queues.
  informers.start();

  const resyncMs = (opts.resyncSeconds ?? 300) * 1000;
  const timer = resyncMs > 0 ? setInterval(() => resync(), resyncMs) : undefined;
  timer?.unref();

  function resync(): void {
    for (const c of controllers) c.resync();
  }

  return {
    resync,
    async settled() {
      // Two quiet turns in a row: a reconcile's writes may enqueue work for another controller.
      let quiet = 0;
      while (quiet < 2) {
        await new Promise((r) => setImmediate(r));
        quiet = controllers.every((c) => c.idle) ? quiet + 1 : 0;
      }
    },
    close() {
      if (timer) clearInterval(timer);
      for (const c of controllers) c.close();
      informers.close();
    },
  };
}

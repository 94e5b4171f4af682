/**
 * The lab's pod runtime: what a kubelet and its container runtime do for one node.
 *
 * ```ts
 * const runtime = new PodRuntime({ nodeName, nodeNetns, cniConf, logDir });
 * runtime.onChange((key, status) => patchPodStatus(key, status));
 * await runtime.sync(pod);
 * await runtime.exec('prod/client', ['curl', '-s', 'http://10.0.1.5:8080/']);
 * await runtime.close();
 * ```
 */
export { type CniCall, CniError, type CniResult } from './cni.js';
export {
  type Container,
  type ContainerDef,
  type ContainerPort,
  type EnvVar,
  type Pod,
  type PodDef,
  type PodSpec,
  type Probe,
  parsePod,
  podKey,
  type Readiness,
  type RestartPolicy,
} from './pod.js';
export {
  type ClusterDns,
  DEFAULT_CNI_BIN,
  type PodExecOptions,
  PodRuntime,
  type PodRuntimeOptions,
  type PodStatusListener,
} from './runtime.js';
export type {
  ContainerState,
  ContainerStatus,
  PodCondition,
  PodConditionType,
  PodPhase,
  PodStatus,
} from './status.js';

/** Hubble's Observer API over gRPC: the agent's server and the clients the relay uses. */
export {
  type GetFlowsRequestPB,
  type GetFlowsResponsePB,
  type GetNamespacesResponsePB,
  type GetNodesResponsePB,
  hyphaVersion,
  type NamespacePB,
  type NodePB,
  type NodeState,
  type ObserverClient,
  observerClient,
  protoDir,
  requestToPB,
  type ServerStatusResponsePB,
  type TimestampPB,
} from './proto.js';
export {
  type ObserverServer,
  type ObserverServerOptions,
  type PeerInfo,
  startObserverServer,
  type TlsOptions,
} from './server.js';
export { eventFromPB, fromPB, type RelayEvent, timestampNs } from './wire.js';

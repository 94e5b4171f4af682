/** Hubble's Observer API over gRPC: the agent's server and the clients the relay uses. */
export {
  type GetFlowsRequestPB,
  type GetFlowsResponsePB,
  hyphaVersion,
  type ObserverClient,
  observerClient,
  protoDir,
  type ServerStatusResponsePB,
} from './proto.js';
export {
  type ObserverServer,
  type ObserverServerOptions,
  type PeerInfo,
  startObserverServer,
  type TlsOptions,
} from './server.js';

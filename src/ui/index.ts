/** Hubble UI for Hypha: the service map and flow table in the browser, fed by the relay. */

export { eventFromPB, fromPB, type RelayEvent } from '../hubble/grpc/index.js';
export { type ApiResponse, UiApi, type UiApiOptions } from './api.js';
export { EventStream, type EventStreamOptions, mapWithLayout, type RowWithFlow, rowOf } from './events.js';
export { type FeedStatus, RelayFeed, type RelayFeedOptions } from './feed.js';
export { layoutMap, type MapLayout, type NodeBox } from './layout.js';
export * from './map.js';
export { DEFAULT_LIMIT, FILTER_PARAMS, type FlowQuery, MAX_LIMIT, parseFlowQuery } from './query.js';
export { startUiServer, type UiServer, type UiServerOptions, uiDir } from './server.js';
export { DEFAULT_CAPACITY, FlowStore, type FlowStoreOptions, type StoreStats } from './store.js';

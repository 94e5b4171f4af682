/** Hubble-compatible flows: building, filtering, the flow ring, `hubble observe` flags and output. */
export * from './builder.js';
export * from './filter.js';
export * from './flow.js';
export * from './l7.js';
export * from './metrics.js';
export * from './observe.js';
export * from './packet.js';
export * from './printer.js';
export * from './ring.js';
export * from './schema.js';

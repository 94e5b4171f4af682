/** The datapath: map codecs, the endpoint programs and typed operations on their maps. */
export * from './constants.js';
export * from './datapath.js';
export * from './host.js';
export * from './layout.js';
export * from './lb.js';
export * from './packet.js';
export * from './pinned.js';

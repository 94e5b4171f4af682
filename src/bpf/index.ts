/**
 * hypha/bpf: load BPF objects compiled from C and work with their maps, programs,
 * attachments and ring buffers, on libbpf.
 */
export * from './btf.js';
export * from './codec.js';
export { BpfError, errnoName, NotSupportedError, VerifierError } from './errors.js';
export * from './fs.js';
export * from './link.js';
export * from './map.js';
export * from './netns.js';
export * from './object.js';
export * from './program.js';
export * from './ringbuf.js';
export * from './types.js';

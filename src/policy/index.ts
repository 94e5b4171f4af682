/** The policy engine: parse, validate, select, compile and trace (pure: no kernel, no cluster). */
export * from './http.js';
export * from './model.js';
export * from './offline.js';
export { cidrContains, type Parsed, POLICY_KINDS, parseCidr, parsePolicy } from './parse.js';
export * from './ports.js';
export * from './repository.js';
export * from './trace.js';

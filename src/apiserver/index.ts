export * from './api.js';
export { checkAgainstCrd } from './crd-check.js';
export type { ExecRequest, ExecTarget } from './exec.js';
export * from './object.js';
export * from './resources.js';
export * from './server.js';
export { Store } from './store.js';

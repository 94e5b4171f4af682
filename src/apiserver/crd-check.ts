/**
 * Custom resources checked against their CRD's OpenAPI v3 schema, as kube-apiserver does:
 * value errors become 422 causes; unknown fields are pruned, and reported so the API can
 * refuse them under `fieldValidation=Strict` or warn about them.
 */
import type { SchemaCheck } from './api.js';
import type { KObject } from './object.js';
import { type CRD, crdSchema, pruneUnknown, validateObject } from './schema/index.js';

export const checkAgainstCrd: SchemaCheck = (crd: KObject, obj: KObject) => {
  const version = obj.apiVersion.split('/')[1] ?? '';
  const schema = crdSchema(crd as unknown as CRD, version);
  if (!schema) return { causes: [], unknown: [] };
  // Pruned first, as kube-apiserver does: a null on a field that takes none is dropped, not an error.
  const unknown = pruneUnknown(schema, obj, { remove: true }).map(
    (m) => /^unknown field "(.*)"$/.exec(m)?.[1] ?? m,
  );
  const causes = validateObject(schema, obj).map((e) => ({
    reason: e.type,
    message: e.message,
    field: e.field,
  }));
  return { causes, unknown };
};

/** Custom resource schemas: Hypha's cilium.io CRDs and OpenAPI v3 validation and pruning against them. */
export {
  CILIUM_ENTITIES,
  CILIUM_GROUP,
  CILIUM_VERSION,
  type CRD,
  type CustomResourceColumnDefinition,
  type CustomResourceDefinition,
  type CustomResourceDefinitionNames,
  type CustomResourceDefinitionVersion,
  ciliumCrds,
  crdSchema,
} from './crds.js';
export {
  type FieldError,
  type FieldErrorType,
  type JSONSchemaProps,
  type PruneOptions,
  pruneUnknown,
  validateObject,
} from './validate.js';

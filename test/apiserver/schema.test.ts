/**
 * Hypha's cilium.io/v2 CRDs and the OpenAPI validation the lab API server runs on custom
 * resources: the tutorial's policies pass, and broken ones fail with the field and reason
 * kube-apiserver would give kubectl.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import {
  type CRD,
  ciliumCrds,
  crdSchema,
  type FieldError,
  type JSONSchemaProps,
  pruneUnknown,
  validateObject,
} from '../../src/apiserver/schema/index.js';
import { loadManifests } from '../../src/k8s/manifests.js';
import { repoRoot } from '../helpers/kernel.js';

const crds = ciliumCrds();

function crdOf(kind: string): CRD {
  const crd = crds.find((c) => c.spec.names.kind === kind);
  assert.ok(crd, `no CRD for ${kind}`);
  return crd;
}

function schemaOf(kind: string): JSONSchemaProps {
  const schema = crdSchema(crdOf(kind), 'v2');
  assert.ok(schema);
  return schema;
}

/** What the server does with a create: strict field validation, then pruning, then validation. */
function admit(obj: Record<string, unknown>): { unknown: string[]; errors: FieldError[] } {
  const schema = schemaOf(String(obj.kind));
  const copy = structuredClone(obj);
  const unknown = pruneUnknown(schema, copy, { remove: true });
  return { unknown, errors: validateObject(schema, copy) };
}

function cnp(spec: Record<string, unknown>): Record<string, unknown> {
  return {
    apiVersion: 'cilium.io/v2',
    kind: 'CiliumNetworkPolicy',
    metadata: { name: 'p', namespace: 'default' },
    spec,
  };
}

/** The tutorial's 5.3 policy, as a base for broken variants. */
function l7Policy(): Record<string, unknown> {
  return cnp({
    endpointSelector: { matchLabels: { app: 'catalog' } },
    ingress: [
      {
        fromEndpoints: [{ matchLabels: { app: 'frontend' } }],
        toPorts: [
          {
            ports: [{ port: '8080', protocol: 'TCP' }],
            rules: { http: [{ method: 'GET', path: '/api/v1/products.*' }] },
          },
        ],
      },
    ],
  });
}

/** The object at a path like `spec.ingress[0].toPorts[0]` of a fixture, to break it. */
function at(obj: unknown, path: string): Record<string, unknown> {
  let cur = obj;
  for (const key of path.split(/[.[\]]+/).filter(Boolean)) {
    assert.ok(typeof cur === 'object' && cur !== null, `${path}: no ${key}`);
    cur = (cur as Record<string, unknown>)[key];
  }
  assert.ok(typeof cur === 'object' && cur !== null && !Array.isArray(cur), `${path} is not an object`);
  return cur as Record<string, unknown>;
}

const tutorial = loadManifests([join(repoRoot, 'examples/tutorial')]);

describe('the tutorial', () => {
  const cilium = tutorial.docs.filter((d) => d.apiVersion === 'cilium.io/v2');

  test('has cilium.io/v2 manifests to check', () => {
    assert.deepEqual(tutorial.errors, []);
    assert.deepEqual(
      cilium.map((d) => d.name),
      ['catalog-l7-policy', 'allow-external-partner', 'require-mutual-auth', 'data-pipeline-egress'],
    );
  });

  // The tutorial's egress gateway policy nests namespaceSelector inside podSelector, a
  // field the CRD does not have: as in Kubernetes, it is unknown (pruned, or refused under
  // strict validation), and the rest validates.
  const errata: Record<string, string[]> = {
    'data-pipeline-egress': ['unknown field "spec.selectors[0].podSelector.namespaceSelector"'],
  };
  for (const doc of cilium) {
    test(`${doc.kind} ${doc.name} validates${errata[doc.name] ? " but for the tutorial's misplaced field" : ' with no errors and no unknown fields'}`, () => {
      assert.deepEqual(admit(doc.object), { unknown: errata[doc.name] ?? [], errors: [] });
    });
  }
});

describe('the CRDs', () => {
  test('carry Cilium’s names, scopes, subresources and printer columns', () => {
    const summary = crds.map((c) => {
      const v = c.spec.versions[0]!;
      return [
        c.metadata.name,
        c.spec.scope,
        c.spec.names.shortNames?.join(',') ?? '',
        v.subresources?.status ? 'status' : '',
        (v.additionalPrinterColumns ?? []).map((col) => col.name).join(','),
      ];
    });
    assert.deepEqual(summary, [
      ['ciliumnetworkpolicies.cilium.io', 'Namespaced', 'cnp,ciliumnp', 'status', 'Age,Valid'],
      ['ciliumclusterwidenetworkpolicies.cilium.io', 'Cluster', 'ccnp', 'status', 'Valid'],
      ['ciliumegressgatewaypolicies.cilium.io', 'Cluster', 'cegp', '', 'Age'],
      ['ciliumidentities.cilium.io', 'Cluster', 'ciliumid', 'status', 'Namespace,Age'],
      ['ciliumnodes.cilium.io', 'Cluster', 'cn,ciliumn', 'status', 'CiliumInternalIP,InternalIP,Age'],
      [
        'ciliumendpoints.cilium.io',
        'Namespaced',
        'cep,ciliumep',
        '',
        'Security Identity,Endpoint State,IPv4,IPv6',
      ],
    ]);
    for (const c of crds) {
      const v = c.spec.versions[0]!;
      assert.equal(c.spec.group, 'cilium.io');
      assert.equal(c.spec.names.listKind, `${c.spec.names.kind}List`);
      assert.ok(v.served && v.storage && v.name === 'v2');
      assert.ok(c.spec.names.categories?.includes('cilium'));
    }
  });

  test('survive a JSON round trip, as they are served', () => {
    assert.deepEqual(JSON.parse(JSON.stringify(crds)), crds);
  });

  test('accept a policy that uses every rule field Cilium documents', () => {
    const peers = {
      fromEndpoints: [{ matchExpressions: [{ key: 'app', operator: 'In', values: ['a', 'b'] }] }],
      fromRequires: [{ matchLabels: { env: 'prod' } }],
      fromEntities: ['world', 'remote-node', 'kube-apiserver'],
      fromCIDR: ['10.0.0.0/8', '2001:db8::/32'],
      fromCIDRSet: [{ cidr: '10.0.0.0/8', except: ['10.96.0.0/12'] }, { cidrGroupRef: 'office-nets' }],
    };
    const ports = [
      {
        ports: [
          { port: '80', protocol: 'TCP' },
          { port: '8000', endPort: 8100 },
          { port: 'http-alt', protocol: 'ANY' },
        ],
        rules: {
          http: [
            {
              method: 'GET',
              path: '/public/.*',
              host: 'shop.example.com',
              headers: ['X-My-Header'],
              headerMatches: [{ name: 'x-token', value: 'abc', mismatch: 'LOG' }],
            },
          ],
        },
        serverNames: ['shop.example.com', '*.example.org'],
      },
    ];
    const policy = {
      apiVersion: 'cilium.io/v2',
      kind: 'CiliumClusterwideNetworkPolicy',
      metadata: { name: 'everything', labels: { team: 'net' } },
      specs: [
        {
          description: 'pods',
          endpointSelector: {},
          enableDefaultDeny: { ingress: true, egress: false },
          labels: [{ key: 'owner', value: 'net', source: 'k8s' }],
          ingress: [{ ...peers, toPorts: ports, authentication: { mode: 'required' } }],
          ingressDeny: [{ fromEntities: ['world'], toPorts: [{ ports: [{ port: '22' }] }] }],
          egress: [
            {
              toFQDNs: [{ matchName: 'api.example.com' }, { matchPattern: '*.example.com' }],
              toPorts: [{ ports: [{ port: '443', protocol: 'TCP' }] }],
            },
            {
              toEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'kube-system' } }],
              toPorts: [
                { ports: [{ port: '53', protocol: 'UDP' }], rules: { dns: [{ matchPattern: '*' }] } },
              ],
            },
            { toServices: [{ k8sService: { serviceName: 'db', namespace: 'data' } }] },
            { toServices: [{ k8sServiceSelector: { selector: { matchLabels: { tier: 'db' } } } }] },
            {
              icmps: [
                {
                  fields: [
                    { type: 8, family: 'IPv4' },
                    { type: 'EchoRequest', family: 'IPv6' },
                  ],
                },
              ],
            },
            {
              toEntities: ['cluster'],
              toPorts: [{ ports: [{ port: '9000' }], rules: { kafka: [{ topic: 't' }] } }],
            },
          ],
          egressDeny: [{ toCIDRSet: [{ cidr: '192.0.2.0/24' }], icmps: [{ fields: [{ type: 0 }] }] }],
        },
        { nodeSelector: { matchLabels: { role: 'gw' } }, ingress: [{ fromEntities: ['cluster'] }] },
      ],
      status: {
        conditions: [{ type: 'Valid', status: 'True', lastTransitionTime: '2025-01-02T03:04:05Z' }],
      },
    };
    assert.deepEqual(admit(policy), { unknown: [], errors: [] });
  });

  test('accept the other kinds as Cilium writes them', () => {
    const objects = [
      {
        apiVersion: 'cilium.io/v2',
        kind: 'CiliumEgressGatewayPolicy',
        metadata: { name: 'egress' },
        spec: {
          selectors: [
            {
              podSelector: { matchLabels: { app: 'exporter' } },
              namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'data' } },
            },
          ],
          destinationCIDRs: ['0.0.0.0/0'],
          excludedCIDRs: ['10.0.0.0/8'],
          egressGateway: { nodeSelector: { matchLabels: { egress: 'true' } }, egressIP: '192.0.2.10' },
        },
      },
      {
        apiVersion: 'cilium.io/v2',
        kind: 'CiliumIdentity',
        metadata: { name: '12345', labels: { 'io.kubernetes.pod.namespace': 'production' } },
        'security-labels': { 'k8s:app': 'catalog', 'k8s:io.kubernetes.pod.namespace': 'production' },
      },
      {
        apiVersion: 'cilium.io/v2',
        kind: 'CiliumNode',
        metadata: { name: 'node-a' },
        spec: {
          addresses: [
            { type: 'InternalIP', ip: '172.18.0.2' },
            { type: 'CiliumInternalIP', ip: '10.0.0.1' },
          ],
          health: { ipv4: '10.0.0.7' },
          encryption: {},
          ipam: { podCIDRs: ['10.0.0.0/24'] },
          eni: { 'vpc-id': 'vpc-1', 'subnet-ids': ['s-1'] },
        },
        status: { ipam: { 'operator-status': {} } },
      },
      {
        apiVersion: 'cilium.io/v2',
        kind: 'CiliumEndpoint',
        metadata: { name: 'catalog-1', namespace: 'production' },
        status: {
          id: 1234,
          identity: { id: 12345, labels: ['k8s:app=catalog'] },
          networking: { addressing: [{ ipv4: '10.0.0.12' }], node: '172.18.0.2' },
          state: 'ready',
          'named-ports': [{ name: 'http', port: 8080, protocol: 'TCP' }],
          policy: { ingress: { enforcing: true, state: 'enforcing' }, egress: { enforcing: false } },
        },
      },
    ];
    for (const o of objects) assert.deepEqual(admit(o), { unknown: [], errors: [] }, String(o.kind));
  });
});

describe('broken policies fail as kube-apiserver reports them', () => {
  test('a misspelt field is unknown under strict field validation, and pruned otherwise', () => {
    const obj = l7Policy();
    const spec = obj.spec as Record<string, unknown>;
    spec.ingres = spec.ingress;
    delete spec.ingress;
    assert.deepEqual(pruneUnknown(schemaOf('CiliumNetworkPolicy'), obj), ['unknown field "spec.ingres"']);
    assert.ok('ingres' in spec, 'without remove, nothing changes');
    // Pruned, the policy has no rules left, which the schema does not allow either.
    assert.deepEqual(admit(obj), {
      unknown: ['unknown field "spec.ingres"'],
      errors: [
        {
          type: 'FieldValueInvalid',
          field: '<nil>',
          message: 'Invalid value: "": "spec" must validate at least one schema (anyOf)',
        },
        { type: 'FieldValueRequired', field: 'spec.ingress', message: 'Required value' },
      ],
    });
  });

  test('unknown fields are reported metadata first, then sorted, and removed with remove', () => {
    const obj = l7Policy();
    (obj.metadata as Record<string, unknown>).labelz = { a: 'b' };
    const rule = at(obj, 'spec.ingress[0]');
    rule.toPort = [];
    rule.fromEndpoint = [];
    obj.extra = 1;
    const schema = schemaOf('CiliumNetworkPolicy');
    assert.deepEqual(pruneUnknown(schema, obj, { remove: true }), [
      'unknown field "metadata.labelz"',
      'unknown field "extra"',
      'unknown field "spec.ingress[0].fromEndpoint"',
      'unknown field "spec.ingress[0].toPort"',
    ]);
    assert.deepEqual(pruneUnknown(schema, obj), []);
    assert.deepEqual(obj, l7Policy());
  });

  test('a port given as a number is the wrong type: ports are strings', () => {
    const obj = l7Policy();
    at(obj, 'spec.ingress[0].toPorts[0].ports[0]').port = 8080;
    assert.deepEqual(admit(obj).errors, [
      {
        type: 'FieldValueTypeInvalid',
        field: 'spec.ingress[0].toPorts[0].ports[0].port',
        message:
          'Invalid value: "integer": spec.ingress[0].toPorts[0].ports[0].port in body must be of type string: "integer"',
      },
    ]);
  });

  test('an ICMP type is an int or a string, and a string must name a type', () => {
    const withType = (type: unknown) =>
      cnp({ endpointSelector: {}, egress: [{ icmps: [{ fields: [{ type }] }] }] });
    assert.deepEqual(admit(withType(8)).errors, []);
    assert.deepEqual(admit(withType('EchoRequest')).errors, []);
    const field = 'spec.egress[0].icmps[0].fields[0].type';
    assert.deepEqual(admit(withType(true)).errors, [
      {
        type: 'FieldValueTypeInvalid',
        field,
        message: `Invalid value: "boolean": ${field} in body must be of type integer,string: "boolean"`,
      },
      {
        type: 'FieldValueInvalid',
        field: '<nil>',
        message: `Invalid value: "": "${field}" must validate at least one schema (anyOf)`,
      },
      {
        type: 'FieldValueTypeInvalid',
        field,
        message: `Invalid value: "boolean": ${field} in body must be of type integer: "boolean"`,
      },
    ]);
    const [bad] = admit(withType('EchoRequst')).errors;
    assert.equal(bad?.type, 'FieldValueInvalid');
    assert.equal(bad?.field, field);
    assert.match(
      bad?.message ?? '',
      /^Invalid value: "EchoRequst": spec\.egress\[0\]\.icmps\[0\]\.fields\[0\]\.type in body should match '\^\(/,
    );
  });

  test('a protocol outside the enum lists the supported values', () => {
    const obj = l7Policy();
    at(obj, 'spec.ingress[0].toPorts[0].ports[0]').protocol = 'tcp';
    assert.deepEqual(admit(obj).errors, [
      {
        type: 'FieldValueNotSupported',
        field: 'spec.ingress[0].toPorts[0].ports[0].protocol',
        message: 'Unsupported value: "tcp": supported values: "TCP", "UDP", "SCTP", "ANY"',
      },
    ]);
  });

  test('an unknown entity lists Cilium’s entities', () => {
    const obj = cnp({ endpointSelector: {}, egress: [{ toEntities: ['world', 'word'] }] });
    assert.deepEqual(admit(obj).errors, [
      {
        type: 'FieldValueNotSupported',
        field: 'spec.egress[0].toEntities[1]',
        message:
          'Unsupported value: "word": supported values: "all", "world", "cluster", "host", "init", "ingress", ' +
          '"unmanaged", "remote-node", "health", "none", "kube-apiserver"',
      },
    ]);
  });

  test('a missing required field is named with its full path', () => {
    const obj = cnp({ endpointSelector: {}, ingress: [{ authentication: {} }] });
    assert.deepEqual(admit(obj).errors, [
      { type: 'FieldValueRequired', field: 'spec.ingress[0].authentication.mode', message: 'Required value' },
    ]);
    const cegp = {
      apiVersion: 'cilium.io/v2',
      kind: 'CiliumEgressGatewayPolicy',
      metadata: { name: 'e' },
      spec: { selectors: [{ podSelector: {} }], egressGateway: {} },
    };
    assert.deepEqual(admit(cegp).errors, [
      { type: 'FieldValueRequired', field: 'spec.egressGateway.nodeSelector', message: 'Required value' },
      { type: 'FieldValueRequired', field: 'spec.destinationCIDRs', message: 'Required value' },
    ]);
  });

  test('a duplicate key in a map-list is a duplicate value, reported once at its second entry', () => {
    const obj = l7Policy();
    obj.status = {
      conditions: [
        { type: 'Valid', status: 'True' },
        { type: 'Valid', status: 'False' },
        { type: 'Valid', status: 'Unknown' },
        { type: 'Ready', status: 'True' },
      ],
    };
    assert.deepEqual(admit(obj).errors, [
      {
        type: 'FieldValueDuplicate',
        field: 'status.conditions[1]',
        message: 'Duplicate value: {"type":"Valid"}',
      },
    ]);
  });

  test('a duplicate in a set-list is a duplicate value', () => {
    const obj = l7Policy();
    at(obj, 'spec.ingress[0].toPorts[0]').serverNames = ['a.example.com', 'a.example.com'];
    assert.deepEqual(admit(obj).errors, [
      {
        type: 'FieldValueDuplicate',
        field: 'spec.ingress[0].toPorts[0].serverNames[1]',
        message: 'Duplicate value: "a.example.com"',
      },
    ]);
  });

  test('both endpointSelector and nodeSelector break the one-of', () => {
    const obj = l7Policy();
    at(obj, 'spec').nodeSelector = {};
    assert.deepEqual(admit(obj).errors, [
      {
        type: 'FieldValueInvalid',
        field: '<nil>',
        message:
          'Invalid value: "": "spec" must validate one and only one schema (oneOf). Found 2 valid alternatives',
      },
    ]);
  });

  test('an FQDN selector needs exactly one of matchName and matchPattern', () => {
    const obj = cnp({ endpointSelector: {}, egress: [{ toFQDNs: [{}] }] });
    assert.deepEqual(admit(obj).errors, [
      {
        type: 'FieldValueInvalid',
        field: '<nil>',
        message:
          'Invalid value: "": "spec.egress[0].toFQDNs[0]" must validate one and only one schema (oneOf). Found none valid',
      },
      { type: 'FieldValueRequired', field: 'spec.egress[0].toFQDNs[0].matchName', message: 'Required value' },
    ]);
  });

  test('strings are checked for format, length and pattern', () => {
    const obj = cnp({
      endpointSelector: { matchLabels: { app: 'x'.repeat(64) } },
      egress: [{ toCIDR: ['10.0.0.0/33'], toFQDNs: [{ matchName: 'bad name.com' }] }],
    });
    assert.deepEqual(admit(obj).errors, [
      {
        type: 'FieldValueTooLong',
        field: 'spec.endpointSelector.matchLabels.app',
        message: 'Too long: may not be more than 63 bytes',
      },
      {
        type: 'FieldValueTypeInvalid',
        field: 'spec.egress[0].toCIDR[0]',
        message:
          'Invalid value: "10.0.0.0/33": spec.egress[0].toCIDR[0] in body must be of type cidr: "10.0.0.0/33"',
      },
      {
        type: 'FieldValueInvalid',
        field: 'spec.egress[0].toFQDNs[0].matchName',
        message:
          'Invalid value: "bad name.com": spec.egress[0].toFQDNs[0].matchName in body should match \'^([-a-zA-Z0-9_]+[.]?)+$\'',
      },
    ]);
  });

  test('numbers are checked against their bounds, lists against their length', () => {
    const ports = Array.from({ length: 41 }, (_, i) => ({ port: String(1000 + i) }));
    ports[0] = { port: '80', endPort: 70000 } as (typeof ports)[0];
    const obj = cnp({ endpointSelector: {}, ingress: [{ toPorts: [{ ports }] }] });
    assert.deepEqual(admit(obj).errors, [
      {
        type: 'FieldValueInvalid',
        field: 'spec.ingress[0].toPorts[0].ports[0].endPort',
        message:
          'Invalid value: 70000: spec.ingress[0].toPorts[0].ports[0].endPort in body should be less than or equal to 65535',
      },
      {
        type: 'FieldValueTooMany',
        field: 'spec.ingress[0].toPorts[0].ports',
        message: 'Too many: 41: must have at most 40 items',
      },
    ]);
  });

  test('a null where the schema allows none is pruned, as the server does before validating', () => {
    const obj = l7Policy();
    at(obj, 'spec').description = null;
    assert.deepEqual(admit(obj), { unknown: [], errors: [] });
    assert.deepEqual(validateObject(schemaOf('CiliumNetworkPolicy'), obj), [
      {
        type: 'FieldValueTypeInvalid',
        field: 'spec.description',
        message: 'Invalid value: "null": spec.description in body must be of type string: "null"',
      },
    ]);
  });

  test('a CiliumIdentity needs its security labels', () => {
    const id = { apiVersion: 'cilium.io/v2', kind: 'CiliumIdentity', metadata: { name: '1' } };
    assert.deepEqual(admit(id).errors, [
      { type: 'FieldValueRequired', field: 'security-labels', message: 'Required value' },
    ]);
  });
});

describe('the validator on its own', () => {
  test('nullable, exclusive bounds, minLength, uniqueItems and preserve-unknown-fields', () => {
    const schema: JSONSchemaProps = {
      type: 'object',
      properties: {
        n: { type: 'number', exclusiveMinimum: true, minimum: 0, nullable: true },
        s: { type: 'string', minLength: 2 },
        u: { type: 'array', uniqueItems: true, items: { type: 'integer' } },
        free: {
          type: 'object',
          'x-kubernetes-preserve-unknown-fields': true,
          properties: { k: { type: 'object' } },
        },
      },
    };
    assert.deepEqual(validateObject(schema, { n: null, s: 'ab', u: [1, 2], free: { anything: [1] } }), []);
    assert.deepEqual(
      validateObject(schema, { n: 0, s: 'a', u: [1, 1] }).map((e) => e.message),
      [
        'Invalid value: 0: n in body should be greater than 0',
        'Invalid value: "a": s in body should be at least 2 chars long',
        'Invalid value: "": u in body shouldn\'t contain duplicates',
      ],
    );
    const obj = { free: { anything: 1, k: { dropped: true } } };
    assert.deepEqual(pruneUnknown(schema, obj, { resourceRoot: false }), ['unknown field "free.k.dropped"']);
  });

  test('embedded resources need apiVersion and kind, and keep their metadata', () => {
    const schema: JSONSchemaProps = {
      type: 'object',
      properties: {
        template: {
          type: 'object',
          'x-kubernetes-embedded-resource': true,
          properties: { spec: { type: 'object' } },
        },
      },
    };
    const obj = { template: { metadata: { name: 'x', bogus: 1 }, spec: {}, other: 1 } };
    assert.deepEqual(pruneUnknown(schema, obj, { resourceRoot: false }), [
      'unknown field "template.metadata.bogus"',
      'unknown field "template.other"',
    ]);
    assert.deepEqual(validateObject(schema, obj), [
      { type: 'FieldValueRequired', field: 'template.apiVersion', message: 'Required value' },
      { type: 'FieldValueRequired', field: 'template.kind', message: 'Required value' },
    ]);
  });

  test('formats: ipv4, ipv6, cidr and date-time', () => {
    const schema: JSONSchemaProps = {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          v4: { type: 'string', format: 'ipv4' },
          v6: { type: 'string', format: 'ipv6' },
          net: { type: 'string', format: 'cidr' },
          at: { type: 'string', format: 'date-time' },
        },
      },
    };
    const good = [
      { v4: '192.0.2.1', v6: '2001:db8::1', net: '::/0', at: '2025-01-02T03:04:05.123+01:00' },
      { v4: '010.0.0.1', v6: '::ffff:192.0.2.1', net: '0.0.0.0/0', at: '2024-02-29t00:00:00z' },
    ];
    assert.deepEqual(validateObject(schema, good), []);
    const bad = [{ v4: '256.0.0.1', v6: '2001:db8:::1', net: '10.0.0.0', at: '2025-02-30T00:00:00Z' }];
    assert.deepEqual(
      validateObject(schema, bad).map((e) => `${e.field} ${e.type}`),
      [
        '[0].v4 FieldValueTypeInvalid',
        '[0].v6 FieldValueTypeInvalid',
        '[0].net FieldValueTypeInvalid',
        '[0].at FieldValueTypeInvalid',
      ],
    );
  });
});

test('formats kube-apiserver does not support are ignored, as it strips them', () => {
  const schema: JSONSchemaProps = {
    type: 'object',
    properties: {
      host: { type: 'string', format: 'idn-hostname' },
      net: { type: 'string', format: 'cidr' },
      port: { type: 'integer', format: 'int32' },
      count: { type: 'integer', format: 'int16' },
    },
  };
  assert.deepEqual(validateObject(schema, { host: 'not a host name', port: 1, count: 1 }), []);
  // With a format it keeps, kube-openapi lets an array through a string field; without one it does not.
  assert.deepEqual(validateObject(schema, { net: [] }), []);
  assert.deepEqual(validateObject(schema, { host: [] }), [
    {
      type: 'FieldValueTypeInvalid',
      field: 'host',
      message: 'Invalid value: "array": host in body must be of type string: "array"',
    },
  ]);
  assert.deepEqual(validateObject(schema, { port: 2 ** 31, count: 2 ** 31 }), [
    {
      type: 'FieldValueInvalid',
      field: '<nil>',
      message: 'Invalid value: "": Checked value must be of type integer with format int32 in port',
    },
  ]);
});

/**
 * The CustomResourceDefinitions of the `cilium.io/v2` kinds Hypha serves, as plain
 * apiextensions.k8s.io/v1 objects: what `kubectl get crd` shows, what discovery and
 * `kubectl explain` are built from, and the schemas custom resources are validated and
 * pruned against. Names, scopes, subresources and printer columns are Cilium's; the
 * schemas follow Cilium's (pkg/k8s/apis/cilium.io/client/crds/v2), written out for the
 * fields Hypha implements and kept open (x-kubernetes-preserve-unknown-fields) only for
 * cloud-IPAM sections of CiliumNode that Hypha does not model.
 */
import type { JSONSchemaProps } from './validate.js';

export interface CustomResourceDefinitionNames {
  plural: string;
  singular: string;
  kind: string;
  listKind: string;
  shortNames?: string[];
  categories?: string[];
}

export interface CustomResourceColumnDefinition {
  name: string;
  type: 'string' | 'integer' | 'number' | 'boolean' | 'date';
  jsonPath: string;
  description?: string;
  format?: string;
  priority?: number;
}

export interface CustomResourceDefinitionVersion {
  name: string;
  served: boolean;
  storage: boolean;
  schema: { openAPIV3Schema: JSONSchemaProps };
  /** `status: {}` enables the /status subresource. */
  subresources?: { status?: Record<string, never> };
  additionalPrinterColumns?: CustomResourceColumnDefinition[];
}

export interface CustomResourceDefinition {
  apiVersion: 'apiextensions.k8s.io/v1';
  kind: 'CustomResourceDefinition';
  metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec: {
    group: string;
    names: CustomResourceDefinitionNames;
    scope: 'Namespaced' | 'Cluster';
    versions: CustomResourceDefinitionVersion[];
  };
}

export type CRD = CustomResourceDefinition;

export const CILIUM_GROUP = 'cilium.io';
export const CILIUM_VERSION = 'v2';

// ---- building blocks --------------------------------------------------------------
// Each returns a fresh object, so no two places in a CRD share a node.

function str(description?: string, more: JSONSchemaProps = {}): JSONSchemaProps {
  return { ...(description ? { description } : {}), type: 'string', ...more };
}

function int(description?: string, more: JSONSchemaProps = {}): JSONSchemaProps {
  return { ...(description ? { description } : {}), type: 'integer', ...more };
}

function bool(description?: string): JSONSchemaProps {
  return { ...(description ? { description } : {}), type: 'boolean' };
}

function list(items: JSONSchemaProps, description?: string, more: JSONSchemaProps = {}): JSONSchemaProps {
  return { ...(description ? { description } : {}), type: 'array', items, ...more };
}

function object(
  properties: Record<string, JSONSchemaProps>,
  description?: string,
  more: JSONSchemaProps = {},
): JSONSchemaProps {
  return { ...(description ? { description } : {}), type: 'object', properties, ...more };
}

function stringMap(description?: string, values: JSONSchemaProps = { type: 'string' }): JSONSchemaProps {
  return { ...(description ? { description } : {}), type: 'object', additionalProperties: values };
}

/** An object whose contents Hypha does not model; kept as written. */
function opaque(description: string): JSONSchemaProps {
  return { description, type: 'object', 'x-kubernetes-preserve-unknown-fields': true };
}

/** "Exactly one of these fields", as kubebuilder's one-of markers generate it. */
function exactlyOne(...fields: string[]): JSONSchemaProps[] {
  return fields.map((f) => ({ properties: { [f]: {} }, required: [f] }));
}

const TYPE_META: Record<string, JSONSchemaProps> = {
  apiVersion: str('The versioned schema of this object, cilium.io/v2.'),
  kind: str('The REST resource this object represents.'),
  metadata: { type: 'object' },
};

function resource(
  description: string,
  properties: Record<string, JSONSchemaProps>,
  required: string[] = [],
): JSONSchemaProps {
  return {
    description,
    type: 'object',
    properties: { ...TYPE_META, ...properties },
    required: ['metadata', ...required],
  };
}

const LABEL_VALUE = '^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$';
const DNS_SUBDOMAIN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$';
const FQDN_NAME = '^([-a-zA-Z0-9_]+[.]?)+$';
const FQDN_PATTERN = '^([-a-zA-Z0-9_*]+[.]?)+$';
/** A port number 0-65535, or a named port like `http` or `http-alt`. */
const PORT =
  '^(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})|([a-zA-Z0-9]-?)*[a-zA-Z](-?[a-zA-Z0-9])*$';

const ICMP_TYPE_NAMES = [
  'EchoReply',
  'DestinationUnreachable',
  'Redirect',
  'Echo',
  'EchoRequest',
  'RouterAdvertisement',
  'RouterSelection',
  'TimeExceeded',
  'ParameterProblem',
  'Timestamp',
  'TimestampReply',
  'Photuris',
  'ExtendedEchoRequest',
  'ExtendedEchoReply',
  'PacketTooBig',
  'MulticastListenerQuery',
  'MulticastListenerReport',
  'MulticastListenerDone',
  'RouterSolicitation',
  'NeighborSolicitation',
  'NeighborAdvertisement',
  'RedirectMessage',
  'RouterRenumbering',
  'ICMPNodeInformationQuery',
  'ICMPNodeInformationResponse',
  'InverseNeighborDiscoverySolicitation',
  'InverseNeighborDiscoveryAdvertisement',
  'HomeAgentAddressDiscoveryRequest',
  'HomeAgentAddressDiscoveryReply',
  'MobilePrefixSolicitation',
  'MobilePrefixAdvertisement',
  'DuplicateAddressRequestCodeSuffix',
  'DuplicateAddressConfirmationCodeSuffix',
];
const ICMP_TYPE = `^([0-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5]|${ICMP_TYPE_NAMES.join('|')})$`;

/** Cilium's entities: identities that are classes of peers rather than labelled endpoints. */
export const CILIUM_ENTITIES = [
  'all',
  'world',
  'cluster',
  'host',
  'init',
  'ingress',
  'unmanaged',
  'remote-node',
  'health',
  'none',
  'kube-apiserver',
];

function labelSelector(description: string): JSONSchemaProps {
  return object(
    {
      matchLabels: stringMap(
        '{key: value} pairs; each is a requirement that the label `key` equals `value`. Requirements are ANDed.',
        str(undefined, { maxLength: 63, pattern: LABEL_VALUE }),
      ),
      matchExpressions: list(
        object(
          {
            key: str('The label key the requirement applies to.'),
            operator: str('How the key relates to the values.', {
              enum: ['In', 'NotIn', 'Exists', 'DoesNotExist'],
            }),
            values: list(str(), 'Values for In and NotIn; empty for Exists and DoesNotExist.', {
              'x-kubernetes-list-type': 'atomic',
            }),
          },
          'A label requirement: a key, an operator, and values.',
          { required: ['key', 'operator'] },
        ),
        'Label requirements. Requirements are ANDed.',
        { 'x-kubernetes-list-type': 'atomic' },
      ),
    },
    description,
    { 'x-kubernetes-map-type': 'atomic' },
  );
}

function endpointSelectors(description: string): JSONSchemaProps {
  return list(labelSelector('Selects endpoints by their labels.'), description);
}

function cidr(description = 'A CIDR prefix, e.g. 192.0.2.0/24.'): JSONSchemaProps {
  return str(description, { format: 'cidr' });
}

function cidrRule(): JSONSchemaProps {
  return object(
    {
      cidr: cidr('The CIDR prefix the rule allows or denies.'),
      cidrGroupRef: str('The name of a CiliumCIDRGroup holding the prefixes.', {
        maxLength: 253,
        pattern: DNS_SUBDOMAIN,
      }),
      cidrGroupSelector: labelSelector('Selects CiliumCIDRGroups by their labels.'),
      except: list(cidr(), 'Prefixes inside `cidr` that the rule does not cover.'),
    },
    'A CIDR prefix with optional exceptions, or a reference to CiliumCIDRGroups.',
    { oneOf: exactlyOne('cidr', 'cidrGroupRef', 'cidrGroupSelector') },
  );
}

function entities(description: string): JSONSchemaProps {
  return list(
    str('A class of peers without individual identities.', { enum: [...CILIUM_ENTITIES] }),
    description,
  );
}

function fqdnSelector(description: string): JSONSchemaProps {
  return object(
    {
      matchName: str('A literal DNS name; a trailing "." is implied.', {
        maxLength: 255,
        pattern: FQDN_NAME,
      }),
      matchPattern: str('A DNS name with "*" wildcards; "**." matches any number of labels.', {
        maxLength: 255,
        pattern: FQDN_PATTERN,
      }),
    },
    description,
    { oneOf: exactlyOne('matchName', 'matchPattern') },
  );
}

function groups(description: string): JSONSchemaProps {
  return list(
    object(
      {
        aws: object(
          {
            labels: stringMap(),
            region: str(),
            securityGroupsIds: list(str()),
            securityGroupsNames: list(str()),
          },
          'AWS security groups whose members are peers.',
        ),
      },
      'Peers looked up in an outside provider.',
    ),
    description,
  );
}

function icmpRules(description: string): JSONSchemaProps {
  return list(
    object(
      {
        fields: list(
          object(
            {
              type: {
                description: 'An ICMP type: a number 0-255 or its CamelCase name, e.g. EchoRequest.',
                anyOf: [{ type: 'integer' }, { type: 'string' }],
                pattern: ICMP_TYPE,
                'x-kubernetes-int-or-string': true,
              },
              family: str('The IP family, IPv4 (default) or IPv6.', {
                default: 'IPv4',
                enum: ['IPv4', 'IPv6'],
              }),
            },
            'One ICMP type.',
            { required: ['type'] },
          ),
          'ICMP types.',
          { maxItems: 40 },
        ),
      },
      'A set of ICMP types.',
    ),
    description,
  );
}

function authentication(): JSONSchemaProps {
  return object(
    {
      mode: str('The authentication the allowed traffic needs.', {
        enum: ['disabled', 'required', 'test-always-fail'],
      }),
    },
    'Authentication required for the allowed traffic.',
    { required: ['mode'] },
  );
}

function portProtocols(): JSONSchemaProps {
  return list(
    object(
      {
        port: str('A port number, or a named container port like "http".', { pattern: PORT }),
        endPort: int('The last port of a range that starts at `port`.', {
          format: 'int32',
          minimum: 0,
          maximum: 65535,
        }),
        protocol: str('TCP, UDP, SCTP, or ANY (the default) for all three.', {
          enum: ['TCP', 'UDP', 'SCTP', 'ANY'],
        }),
      },
      'An L4 port with an optional protocol.',
      { required: ['port'] },
    ),
    'L4 ports and protocols.',
    { maxItems: 40 },
  );
}

function secretRef(description: string): JSONSchemaProps {
  return object({ name: str('The name of the secret.'), namespace: str('Its namespace.') }, description, {
    required: ['name'],
  });
}

function tlsContext(description: string): JSONSchemaProps {
  return object(
    {
      secret: secretRef('The secret holding the certificates and key.'),
      certificate: str('The secret item with the certificate chain (default tls.crt).'),
      privateKey: str('The secret item with the private key (default tls.key).'),
      trustedCA: str('The secret item with the trusted CA (default ca.crt).'),
    },
    description,
    { required: ['secret'] },
  );
}

function httpRule(): JSONSchemaProps {
  return object(
    {
      method: str('An extended POSIX regex matched against the request method.'),
      path: str('An extended POSIX regex matched against the request path.'),
      host: str('An extended POSIX regex matched against the Host header.', { format: 'idn-hostname' }),
      headers: list(str(), 'Headers that must be present.'),
      headerMatches: list(
        object(
          {
            name: str('The header name.', { minLength: 1 }),
            value: str('The exact value it must have.'),
            mismatch: str('What to do when the value differs, instead of dropping.', {
              enum: ['LOG', 'ADD', 'DELETE', 'REPLACE'],
            }),
            secret: secretRef('A secret holding the value.'),
          },
          'A header that must be present and match.',
          { required: ['name'] },
        ),
        'Headers that must match given values.',
      ),
    },
    'An HTTP request constraint; every field given must match.',
  );
}

function kafkaRule(): JSONSchemaProps {
  return object(
    {
      role: str('produce or consume; sets apiKey to the matching requests.', {
        enum: ['produce', 'consume'],
      }),
      apiKey: str('The Kafka request type, e.g. produce or fetch.'),
      apiVersion: str('The Kafka API version.'),
      clientID: str('The client identifier.'),
      topic: str('The topic.', { maxLength: 255 }),
    },
    'A Kafka request constraint.',
  );
}

function l7Rules(): JSONSchemaProps {
  return object(
    {
      http: list(httpRule(), 'HTTP rules.'),
      kafka: list(kafkaRule(), 'Kafka rules.'),
      dns: list(fqdnSelector('A DNS name the endpoint may look up.'), 'DNS rules.'),
      l7proto: str('The name of a proxylib parser for the `l7` rules.'),
      l7: list(stringMap('Key-value pairs for the parser.'), 'Generic L7 rules.'),
    },
    'L7 rules the traffic on these ports must also match. One kind per port rule.',
    { oneOf: exactlyOne('http', 'kafka', 'dns', 'l7proto') },
  );
}

function portRules(deny: boolean): JSONSchemaProps {
  if (deny) {
    return list(object({ ports: portProtocols() }, 'Ports the rule denies.'), 'Destination ports denied.');
  }
  return list(
    object(
      {
        ports: portProtocols(),
        rules: l7Rules(),
        terminatingTLS: tlsContext('TLS the proxy terminates.'),
        originatingTLS: tlsContext('TLS the proxy originates towards the destination.'),
        serverNames: list(
          str('An SNI, "*" wildcards allowed.', { maxLength: 255, pattern: FQDN_PATTERN }),
          'Allowed TLS server names.',
          { minItems: 1, 'x-kubernetes-list-type': 'set' },
        ),
        listener: object(
          {
            envoyConfig: object(
              {
                kind: str('CiliumEnvoyConfig or CiliumClusterwideEnvoyConfig.', {
                  enum: ['CiliumEnvoyConfig', 'CiliumClusterwideEnvoyConfig'],
                }),
                name: str('Its name.', { minLength: 1 }),
              },
              'The Envoy config defining the listener.',
              { required: ['name'] },
            ),
            name: str('The listener name.', { minLength: 1 }),
            priority: int('Priority among listeners for the same traffic.', { minimum: 1, maximum: 100 }),
          },
          'A custom Envoy listener to redirect the traffic to.',
          { required: ['envoyConfig', 'name'] },
        ),
      },
      'Ports with optional L7 rules.',
    ),
    'Destination ports allowed, with optional L7 rules.',
  );
}

function services(): JSONSchemaProps {
  return list(
    object(
      {
        k8sService: object(
          { serviceName: str('The Service name.'), namespace: str('Its namespace.') },
          'A Service by name.',
        ),
        k8sServiceSelector: object(
          {
            selector: labelSelector('Selects Services by their labels.'),
            namespace: str('The namespace of the Services.'),
          },
          'Services by labels.',
          { required: ['selector'] },
        ),
      },
      'Kubernetes Services whose backends are peers.',
    ),
    'Services the endpoints may connect to.',
  );
}

function ingressRule(deny: boolean): JSONSchemaProps {
  const verb = deny ? 'denied' : 'allowed';
  const props: Record<string, JSONSchemaProps> = {
    fromEndpoints: endpointSelectors(`Endpoints traffic is ${verb} from.`),
    fromRequires: endpointSelectors('Labels every peer must also have, for all rules of the endpoint.'),
    fromEntities: entities(`Entities traffic is ${verb} from.`),
    fromCIDR: list(cidr(), `Prefixes traffic is ${verb} from.`),
    fromCIDRSet: list(cidrRule(), `Prefixes with exceptions traffic is ${verb} from.`),
    fromNodes: endpointSelectors(`Nodes traffic is ${verb} from.`),
    fromGroups: groups(`Outside groups traffic is ${verb} from.`),
    toPorts: portRules(deny),
    icmps: icmpRules(`ICMP types ${verb}.`),
  };
  if (!deny) props.authentication = authentication();
  return object(
    props,
    deny ? 'Traffic into the endpoint that is denied.' : 'Traffic into the endpoint that is allowed.',
  );
}

function egressRule(deny: boolean): JSONSchemaProps {
  const verb = deny ? 'denied' : 'allowed';
  const props: Record<string, JSONSchemaProps> = {
    toEndpoints: endpointSelectors(`Endpoints traffic is ${verb} to.`),
    toRequires: endpointSelectors('Labels every peer must also have, for all rules of the endpoint.'),
    toEntities: entities(`Entities traffic is ${verb} to.`),
    toCIDR: list(cidr(), `Prefixes traffic is ${verb} to.`),
    toCIDRSet: list(cidrRule(), `Prefixes with exceptions traffic is ${verb} to.`),
    toServices: services(),
    toNodes: endpointSelectors(`Nodes traffic is ${verb} to.`),
    toGroups: groups(`Outside groups traffic is ${verb} to.`),
    toPorts: portRules(deny),
    icmps: icmpRules(`ICMP types ${verb}.`),
  };
  if (!deny) {
    props.toFQDNs = list(
      fqdnSelector('DNS names whose resolved addresses are peers.'),
      'DNS names traffic is allowed to; needs a DNS rule that lets the lookups through the proxy.',
    );
    props.authentication = authentication();
  }
  return object(
    props,
    deny ? 'Traffic out of the endpoint that is denied.' : 'Traffic out of the endpoint that is allowed.',
  );
}

/** One Cilium policy rule: `spec`, or an element of `specs`. */
function policyRule(description: string): JSONSchemaProps {
  return object(
    {
      description: str('Free text about the rule.'),
      endpointSelector: labelSelector('The endpoints the rule applies to.'),
      nodeSelector: labelSelector('The nodes the rule applies to (host policies, clusterwide only).'),
      ingress: list(ingressRule(false), 'Ingress allow rules.'),
      ingressDeny: list(ingressRule(true), 'Ingress deny rules; they win over allow rules.'),
      egress: list(egressRule(false), 'Egress allow rules.'),
      egressDeny: list(egressRule(true), 'Egress deny rules; they win over allow rules.'),
      enableDefaultDeny: object(
        {
          ingress: bool(
            'Whether selecting an endpoint for ingress denies what no rule allows (default true).',
          ),
          egress: bool('Whether selecting an endpoint for egress denies what no rule allows (default true).'),
        },
        'Whether the rule puts its endpoints into default deny.',
      ),
      labels: list(
        object(
          { key: str(), value: str(), source: str('Where the label comes from, e.g. k8s.') },
          'A label identifying the rule.',
          { required: ['key'] },
        ),
        'Labels identifying the rule.',
      ),
    },
    description,
    {
      anyOf: [
        { properties: { ingress: {} }, required: ['ingress'] },
        { properties: { ingressDeny: {} }, required: ['ingressDeny'] },
        { properties: { egress: {} }, required: ['egress'] },
        { properties: { egressDeny: {} }, required: ['egressDeny'] },
      ],
      oneOf: exactlyOne('endpointSelector', 'nodeSelector'),
    },
  );
}

function conditions(): JSONSchemaProps {
  return list(
    object(
      {
        type: str('The condition type, e.g. Valid.'),
        status: str('True, False or Unknown.'),
        lastTransitionTime: str('When the status last changed.', { format: 'date-time' }),
        reason: str('Why, in CamelCase.'),
        message: str('Why, for people.'),
      },
      'A condition of the object.',
      { required: ['status', 'type'] },
    ),
    'Conditions of the object.',
    { 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['type'] },
  );
}

function policyStatus(): JSONSchemaProps {
  return object(
    {
      conditions: conditions(),
      derivativePolicies: stringMap(
        'Status of the policies derived from this one, by name.',
        object(
          {
            ok: bool('The policy was parsed and imported.'),
            error: str('Why it was not.'),
            enforcing: bool('All endpoints present at import enforce it.'),
            lastUpdated: str(undefined, { format: 'date-time' }),
            localPolicyRevision: int('The policy revision that first implemented it.', { format: 'int64' }),
            annotations: stringMap(),
          },
          'Status of one derived policy.',
        ),
      ),
    },
    'The status of the policy.',
  );
}

function policySchema(description: string): JSONSchemaProps {
  return resource(description, {
    spec: policyRule('The policy rule.'),
    specs: list(policyRule('A policy rule.'), 'Several policy rules, all applied.'),
    status: policyStatus(),
  });
}

function crd(
  names: CustomResourceDefinitionNames,
  scope: 'Namespaced' | 'Cluster',
  schema: JSONSchemaProps,
  opts: { status?: boolean; columns?: CustomResourceColumnDefinition[] } = {},
): CRD {
  const version: CustomResourceDefinitionVersion = {
    name: CILIUM_VERSION,
    served: true,
    storage: true,
    schema: { openAPIV3Schema: schema },
    subresources: opts.status ? { status: {} } : {},
  };
  if (opts.columns) version.additionalPrinterColumns = opts.columns;
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${names.plural}.${CILIUM_GROUP}` },
    spec: { group: CILIUM_GROUP, names, scope, versions: [version] },
  };
}

const AGE: CustomResourceColumnDefinition = {
  name: 'Age',
  type: 'date',
  jsonPath: '.metadata.creationTimestamp',
};
const VALID: CustomResourceColumnDefinition = {
  name: 'Valid',
  type: 'string',
  jsonPath: ".status.conditions[?(@.type=='Valid')].status",
};

// ---- the kinds --------------------------------------------------------------------

function ciliumNetworkPolicy(): CRD {
  return crd(
    {
      plural: 'ciliumnetworkpolicies',
      singular: 'ciliumnetworkpolicy',
      kind: 'CiliumNetworkPolicy',
      listKind: 'CiliumNetworkPolicyList',
      shortNames: ['cnp', 'ciliumnp'],
      categories: ['cilium', 'ciliumpolicy'],
    },
    'Namespaced',
    policySchema(
      'A namespaced Cilium network policy: NetworkPolicy extended with L7, FQDN, entity and deny rules.',
    ),
    { status: true, columns: [{ ...AGE }, { ...VALID }] },
  );
}

function ciliumClusterwideNetworkPolicy(): CRD {
  return crd(
    {
      plural: 'ciliumclusterwidenetworkpolicies',
      singular: 'ciliumclusterwidenetworkpolicy',
      kind: 'CiliumClusterwideNetworkPolicy',
      listKind: 'CiliumClusterwideNetworkPolicyList',
      shortNames: ['ccnp'],
      categories: ['cilium', 'ciliumpolicy'],
    },
    'Cluster',
    policySchema('A cluster-scoped CiliumNetworkPolicy; it can also select nodes (host policies).'),
    { status: true, columns: [{ ...VALID }] },
  );
}

function egressGateway(description: string): JSONSchemaProps {
  return object(
    {
      nodeSelector: labelSelector('Selects the gateway node; of several, the first by name is used.'),
      interface: str('The interface whose first IPv4 address traffic is SNATed to.'),
      egressIP: str('The address traffic is SNATed to.', { format: 'ipv4' }),
    },
    description,
    { required: ['nodeSelector'] },
  );
}

function ciliumEgressGatewayPolicy(): CRD {
  return crd(
    {
      plural: 'ciliumegressgatewaypolicies',
      singular: 'ciliumegressgatewaypolicy',
      kind: 'CiliumEgressGatewayPolicy',
      listKind: 'CiliumEgressGatewayPolicyList',
      shortNames: ['cegp'],
      categories: ['cilium', 'ciliumpolicy'],
    },
    'Cluster',
    resource('Steers traffic from selected pods to selected destinations through a gateway node, SNATed.', {
      spec: object(
        {
          selectors: list(
            object(
              {
                podSelector: labelSelector('Selects the source pods.'),
                namespaceSelector: labelSelector('Selects the namespaces of the source pods.'),
                nodeSelector: labelSelector('Selects the nodes of the source pods.'),
              },
              'Source pods; all selectors given must match.',
            ),
            'The source pods, any of these.',
          ),
          destinationCIDRs: list(cidr(), 'Destinations whose traffic goes through the gateway.', {
            minItems: 1,
          }),
          excludedCIDRs: list(cidr(), 'Destinations inside destinationCIDRs that do not.'),
          egressGateway: egressGateway('The gateway.'),
          egressGateways: list(egressGateway('A gateway.'), 'Several gateways, traffic spread across them.'),
        },
        'The policy.',
        { required: ['selectors', 'destinationCIDRs'] },
      ),
      status: object(
        { conditions: conditions(), groupStatuses: list(opaque('Gateways chosen for one group.')) },
        'Which gateways the policy uses.',
      ),
    }),
    { columns: [{ ...AGE }] },
  );
}

function ciliumIdentity(): CRD {
  return crd(
    {
      plural: 'ciliumidentities',
      singular: 'ciliumidentity',
      kind: 'CiliumIdentity',
      listKind: 'CiliumIdentityList',
      shortNames: ['ciliumid'],
      categories: ['cilium'],
    },
    'Cluster',
    resource(
      'A security identity shared by every node: its name is the numeric identity, its security labels define it.',
      { 'security-labels': stringMap('The labels, with their sources, that define the identity.') },
      ['security-labels'],
    ),
    {
      status: true,
      columns: [
        {
          name: 'Namespace',
          type: 'string',
          jsonPath: '.metadata.labels.io\\.kubernetes\\.pod\\.namespace',
          description: 'The namespace of the entity',
        },
        { ...AGE, description: 'The age of the identity' },
      ],
    },
  );
}

function nodeAddresses(): JSONSchemaProps {
  return object({ ipv4: str(), ipv6: str() });
}

function ciliumNode(): CRD {
  const allocation = () =>
    object(
      { owner: str('Who uses the address.'), resource: str('What the address is attached to.') },
      'An address available for, or taken by, an allocation.',
    );
  return crd(
    {
      plural: 'ciliumnodes',
      singular: 'ciliumnode',
      kind: 'CiliumNode',
      listKind: 'CiliumNodeList',
      shortNames: ['cn', 'ciliumn'],
      categories: ['cilium'],
    },
    'Cluster',
    resource(
      'A node as Cilium manages it: its addresses, IPAM and encryption settings, and their status.',
      {
        spec: object(
          {
            addresses: list(
              object({ ip: str('The address.'), type: str('InternalIP, ExternalIP, CiliumInternalIP, ...') }),
              'The addresses of the node.',
            ),
            health: object({ ipv4: str(), ipv6: str() }, 'The addresses of the health endpoint.'),
            ingress: nodeAddresses(),
            encryption: object(
              { key: int('The key index, or 0 when encryption is off.') },
              'Encryption settings.',
            ),
            bootid: str('Changes when the node reboots.'),
            'instance-id': str('The node identifier at the cloud provider.'),
            nodeidentity: int('The node identity.'),
            ipam: object(
              {
                podCIDRs: list(str(), 'Pod CIDRs allocated to the node.'),
                pool: stringMap('IPv4 addresses available to the node.', allocation()),
                'ipv6-pool': stringMap('IPv6 addresses available to the node.', allocation()),
                pools: opaque('Multi-pool IPAM requests and allocations.'),
                'min-allocate': int(undefined, { minimum: 0 }),
                'max-allocate': int(undefined, { minimum: 0 }),
                'pre-allocate': int(undefined, { minimum: 0 }),
                'max-above-watermark': int(undefined, { minimum: 0 }),
                'static-ip-tags': stringMap(),
              },
              'Address management for the node.',
            ),
            eni: opaque('AWS ENI IPAM settings.'),
            azure: opaque('Azure IPAM settings.'),
            'alibaba-cloud': opaque('Alibaba Cloud IPAM settings.'),
          },
          'The desired configuration of the node.',
        ),
        status: object(
          {
            ipam: object(
              {
                used: stringMap('IPv4 addresses in use.', allocation()),
                'ipv6-used': stringMap('IPv6 addresses in use.', allocation()),
                'operator-status': object({ error: str() }, 'The IPAM operator’s view of the node.'),
                'pod-cidrs': stringMap('Pod CIDRs by status.', object({ status: str() })),
                'release-ips': stringMap('Addresses being released, and how far.', str()),
                'release-ipv6s': stringMap(undefined, str()),
              },
              'Address management status.',
            ),
            eni: opaque('AWS ENI status.'),
            azure: opaque('Azure status.'),
            'alibaba-cloud': opaque('Alibaba Cloud status.'),
          },
          'The observed state of the node.',
        ),
      },
      ['spec'],
    ),
    {
      status: true,
      columns: [
        {
          name: 'CiliumInternalIP',
          type: 'string',
          jsonPath: '.spec.addresses[?(@.type=="CiliumInternalIP")].ip',
          description: 'Cilium internal IP for this node',
        },
        {
          name: 'InternalIP',
          type: 'string',
          jsonPath: '.spec.addresses[?(@.type=="InternalIP")].ip',
          description: 'IP of the node',
        },
        { ...AGE, description: 'Time duration since creation of Ciliumnode' },
      ],
    },
  );
}

export const ENDPOINT_STATES = [
  'creating',
  'waiting-for-identity',
  'not-ready',
  'waiting-to-regenerate',
  'regenerating',
  'restoring',
  'ready',
  'disconnecting',
  'disconnected',
  'invalid',
];

function identityTuples(description: string): JSONSchemaProps {
  return list(
    object(
      {
        identity: int(undefined, { format: 'int64' }),
        'identity-labels': stringMap(),
        'dest-port': int(),
        protocol: int(),
      },
      'A peer identity with destination port and protocol.',
    ),
    description,
  );
}

function policyDirection(): JSONSchemaProps {
  return object(
    {
      enforcing: bool('Whether policy is enforced in this direction.'),
      state: str('enforcing, non-enforcing or disabled.'),
      allowed: identityTuples('Peers allowed.'),
      denied: identityTuples('Peers denied.'),
    },
    'Policy in one direction.',
    { required: ['enforcing'] },
  );
}

function ciliumEndpoint(): CRD {
  return crd(
    {
      plural: 'ciliumendpoints',
      singular: 'ciliumendpoint',
      kind: 'CiliumEndpoint',
      listKind: 'CiliumEndpointList',
      shortNames: ['cep', 'ciliumep'],
      categories: ['cilium'],
    },
    'Namespaced',
    resource('The status of a pod as a Cilium endpoint: identity, addresses, policy.', {
      status: object(
        {
          id: int('The node-local endpoint ID.', { format: 'int64' }),
          identity: object(
            {
              id: int('The numeric security identity.', { format: 'int64' }),
              labels: list(str(), 'The labels of the identity.'),
            },
            'The security identity of the endpoint.',
          ),
          networking: object(
            {
              addressing: list(object({ ipv4: str(), ipv6: str() }), 'The addresses of the endpoint.'),
              node: str('The IP of the node it runs on.'),
            },
            'Networking of the endpoint.',
            { required: ['addressing'] },
          ),
          encryption: object({ key: int() }, 'Encryption settings.'),
          state: str('The state of the endpoint.', { enum: [...ENDPOINT_STATES] }),
          'named-ports': list(
            object({ name: str(), port: int(), protocol: str() }),
            'Named container ports, for policies.',
          ),
          'external-identifiers': object(
            {
              'container-id': str(),
              'container-name': str(),
              'k8s-namespace': str(),
              'k8s-pod-name': str(),
              'pod-name': str(),
              'cni-attachment-id': str(),
            },
            'Identifiers of the endpoint outside Cilium.',
          ),
          health: object(
            { bpf: str(), connected: bool(), overallHealth: str(), policy: str() },
            'Health of the endpoint.',
          ),
          policy: object(
            { ingress: policyDirection(), egress: policyDirection() },
            'Policy enforcement of the endpoint.',
          ),
          controllers: list(opaque('A failing controller.'), 'Failing controllers.'),
          log: list(
            object({ code: str(), message: str(), state: str(), timestamp: str() }),
            'Recent status changes.',
          ),
          'service-account': str('The service account of the pod.'),
          'visibility-policy-status': str(),
        },
        'The status of the endpoint.',
      ),
    }),
    {
      columns: [
        {
          name: 'Security Identity',
          type: 'integer',
          jsonPath: '.status.identity.id',
          description: 'Security Identity',
        },
        { name: 'Endpoint State', type: 'string', jsonPath: '.status.state', description: 'Endpoint State' },
        {
          name: 'IPv4',
          type: 'string',
          jsonPath: '.status.networking.addressing[0].ipv4',
          description: 'Endpoint IPv4 address',
        },
        {
          name: 'IPv6',
          type: 'string',
          jsonPath: '.status.networking.addressing[0].ipv6',
          description: 'Endpoint IPv6 address',
        },
      ],
    },
  );
}

/** The CRDs of the cilium.io/v2 kinds Hypha serves, freshly built (callers may mutate them). */
export function ciliumCrds(): CRD[] {
  return [
    ciliumNetworkPolicy(),
    ciliumClusterwideNetworkPolicy(),
    ciliumEgressGatewayPolicy(),
    ciliumIdentity(),
    ciliumNode(),
    ciliumEndpoint(),
  ];
}

/** The schema a CRD validates `version` against, or undefined if it does not serve it. */
export function crdSchema(crd: CRD, version: string): JSONSchemaProps | undefined {
  return crd.spec.versions.find((v) => v.name === version && v.served)?.schema.openAPIV3Schema;
}

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UsageError } from '../../src/errors.js';
import { parseDuration, parseObserveArgs } from '../../src/hubble/index.js';

const NOW = Date.UTC(2023, 10, 30, 5, 1, 2, 0);
const parse = (...argv: string[]) => parseObserveArgs(argv, NOW);

test('a plain observe asks for the last 20 flows, compact', () => {
  const a = parse();
  assert.deepEqual(
    { number: a.number, first: a.first, follow: a.follow, whitelist: a.whitelist, blacklist: a.blacklist },
    { number: 20, first: false, follow: false, whitelist: [], blacklist: [] },
  );
  assert.equal(a.printer.output, 'compact');
  assert.equal(parse('-f').number, 0, 'following alone starts from now');
  assert.equal(parse('--last', '5', '-f').number, 5);
  assert.equal(parse('--all').number, Number.MAX_SAFE_INTEGER);
  assert.deepEqual([parse('--first', '3').number, parse('--first=3').first], [3, true]);
});

test('a side-less flag matches either side: two whitelist filters', () => {
  assert.deepEqual(parse('--pod', 'production/frontend').whitelist, [
    { source_pod: ['production/frontend'] },
    { destination_pod: ['production/frontend'] },
  ]);
  assert.deepEqual(parse('-n', 'production').whitelist, [
    { source_pod: ['production/'] },
    { destination_pod: ['production/'] },
  ]);
  assert.deepEqual(parse('-A').whitelist, [{ source_pod: ['/'] }, { destination_pod: ['/'] }]);
  assert.deepEqual(parse('--ip', '10.0.0.1', '--port', '80', '--protocol', 'tcp').whitelist, [
    { source_ip: ['10.0.0.1'], source_port: ['80'], protocol: ['tcp'] },
    { destination_ip: ['10.0.0.1'], destination_port: ['80'], protocol: ['tcp'] },
  ]);
  // From/to flags go on both, so the two filters are equal and merge.
  assert.deepEqual(
    parse('--from-pod', 'a', '--to-namespace', 'b', '--verdict', 'DROPPED', '--verdict', 'FORWARDED')
      .whitelist,
    [{ source_pod: ['a'], verdict: ['DROPPED', 'FORWARDED'], destination_pod: ['b/'] }],
  );
  assert.deepEqual(parse('-l', 'app=x', '--to-port', '80').whitelist, [
    { source_label: ['app=x'], destination_port: ['80'] },
    { destination_label: ['app=x'], destination_port: ['80'] },
  ]);
});

test('--not sends the next filter flag to the blacklist', () => {
  const a = parse(
    '--not',
    '--verdict',
    'FORWARDED',
    '--not',
    '--to-namespace',
    'kube-system',
    '--from-pod',
    'x/y',
  );
  assert.deepEqual(a.blacklist, [{ verdict: ['FORWARDED'], destination_pod: ['kube-system/'] }]);
  assert.deepEqual(a.whitelist, [{ source_pod: ['x/y'] }]);
  assert.deepEqual(parse('--not', '--pod', 'a/b').blacklist, [
    { source_pod: ['a/b'] },
    { destination_pod: ['a/b'] },
  ]);
});

test('values are parsed as the CLI parses them', () => {
  const a = parse(
    '--type',
    'trace:to-endpoint',
    '-t',
    'drop',
    '--identity',
    'world',
    '--tcp-flags',
    'syn,ack',
    '--traffic-direction',
    'Ingress',
    '--drop-reason-desc',
    'POLICY_DENIED',
    '--http-header',
    'x-a:b:c',
    '--to-workload',
    'Deployment/api',
    '-4',
  );
  assert.deepEqual(a.whitelist[0], {
    event_type: [{ type: 4, match_sub_type: true }, { type: 1 }],
    source_identity: [2],
    tcp_flags: [{ SYN: true, ACK: true }],
    traffic_direction: ['INGRESS'],
    drop_reason_desc: ['POLICY_DENIED'],
    http_header: [{ key: 'x-a', value: 'b:c' }],
    destination_workload: [{ name: 'api', kind: 'Deployment' }],
    ip_version: ['IPv4'],
  });
  assert.deepEqual(a.whitelist[1]?.destination_identity, [2]);
  const p = parse(
    '-o',
    'json',
    '--print-policy-names',
    '--numeric',
    '--time-format',
    'rfc3339',
    '--node-name',
    'kind-*',
  );
  assert.deepEqual(p.printer, {
    output: 'json',
    timeFormat: 'RFC3339',
    nodeName: false,
    policyNames: true,
    ipTranslation: false,
  });
});

test('--since and --until take durations and times', () => {
  assert.deepEqual(
    {
      since: parse('--since', '5m').since,
      until: parse('--since', '1h30m', '--until', '2023-11-30T04:00:00.5+01:00').until,
    },
    { since: '2023-11-30T04:56:02Z', until: '2023-11-30T03:00:00.500Z' },
  );
  assert.equal(parse('--since', '2023-11-29').since, '2023-11-29T00:00:00Z');
  assert.equal(parse('--since', 'Thu, 30 Nov 2023 06:00:00 +0100').since, '2023-11-30T05:00:00Z');
  const s = parse('--since', '5m');
  assert.equal(s.number, 0, 'a time range replaces the default count');
  assert.equal(parse('--until', '1m', '-f').until, undefined, '--until is ignored when following');
  assert.equal(parseDuration('1.5h'), 5.4e12);
  assert.equal(parseDuration('5'), undefined);
});

test('errors name the flag', () => {
  const bad = (argv: string[], re: RegExp) =>
    assert.throws(
      () => parse(...argv),
      (err: unknown) => err instanceof UsageError && re.test(err.message),
    );
  bad(['--verdict', 'DENIED'], /--verdict/);
  bad(['--not'], /trailing --not/);
  bad(['--not', '--not', '--pod', 'x'], /consecutive --not/);
  bad(['--port', 'http'], /--port value "http"/);
  bad(['--to-ip', '10.0.0.0/99'], /--to-ip/);
  bad(['--http-path', '('], /--http-path/);
  bad(['--label', 'app in (x'], /--label/);
  bad(['--protocol', 'quic'], /--protocol/);
  bad(['--identity', 'nobody'], /--identity/);
  bad(['--type', 'bogus'], /--type/);
  bad(['--tcp-flags', 'syn,xyz'], /--tcp-flags/);
  bad(['--traffic-direction', 'up'], /--traffic-direction/);
  bad(['--since', 'yesterday'], /--since/);
  bad(['--first', '1', '--last', '2'], /--first and --last/);
  bad(['--first', '1', '-f'], /--first and --follow/);
  bad(['--last', 'many'], /--last/);
  bad(['--pod', 'a', '--from-ip', '1.1.1.1'], /--from-ip and --pod|--pod and --from-ip/);
  bad(['--label', 'a=b', '--from-label', 'c=d'], /cannot be combined/);
  bad(['-n', 'a', '--from-pod', 'b/x'], /cannot be combined|namespace conflict/);
  bad(['--to-namespace', 'a', '--to-pod', 'b/x'], /namespace conflict/);
  bad(['--bogus'], /unknown flag: --bogus/);
  bad(['-q'], /unknown shorthand flag/);
  bad(['--pod'], /needs an argument: --pod/);
  bad(['extra'], /unexpected argument/);
  bad(['-o', 'yaml'], /invalid output format: yaml/);
  bad(['-o', 'table', '-f'], /not compatible with follow/);
  bad(['--time-format', 'Kitchen'], /--time-format/);
});

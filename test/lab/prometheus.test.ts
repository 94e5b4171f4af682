/**
 * Hubble metrics scraped by a real Prometheus (Debian's /usr/bin/prometheus): a lab with
 * the tutorial's values (hubble.metrics.enabled: dns, drop, tcp, flow, ...), whose scrape
 * targets the lab writes as a file_sd file; the tutorial's default-deny; traffic that it
 * drops; then Prometheus' HTTP API must show hubble_drop_total with reason POLICY_DENIED
 * and hubble_flows_processed_total, as the tutorial's alerts would read them.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { applyFiles } from '../../src/cli/commands/lab.js';
import type { KubeClient } from '../../src/k8s/client.js';
import type { LabState } from '../../src/lab/lab.js';
import { loadValues } from '../../src/lab/values.js';
import { repoRoot, skipUnlessPrivileged } from '../helpers/kernel.js';
import { type LabFixture, type Pod, startLab, TUTORIAL } from '../helpers/lab.js';

const PROMETHEUS = '/usr/bin/prometheus';

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (typeof a === 'object' && a ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

describe('Prometheus scrapes the lab agents Hubble metrics', { skip: skipUnlessPrivileged() }, () => {
  let t: LabFixture | undefined;
  let state: LabState;
  let client: KubeClient;
  let prom: ChildProcess | undefined;
  let promUrl = '';
  const work = mkdtempSync(join(tmpdir(), 'hyhb-prom-'));

  const query = async (q: string): Promise<Sample[]> => {
    const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(q)}`);
    const body = (await res.json()) as { status: string; data?: { result: Sample[] }; error?: string };
    if (body.status !== 'success') throw new Error(`query ${q}: ${body.error ?? res.status}`);
    return body.data?.result ?? [];
  };

  /** Polls until `fn` returns something truthy or the time is up; the last value either way. */
  const eventually = async <T>(fn: () => Promise<T>, ms: number): Promise<T> => {
    const end = Date.now() + ms;
    for (;;) {
      const v = await fn().catch(() => undefined as T);
      if (v || Date.now() > end) return v;
      await new Promise((r) => setTimeout(r, 500));
    }
  };

  before(async () => {
    assert.ok(existsSync(PROMETHEUS), `${PROMETHEUS} is installed`);
    t = await startLab({
      name: 'hyhblab',
      nodes: 2,
      underlayOctet: 231,
      values: loadValues([join(repoRoot, 'examples/cilium-values.yaml')], []),
      manifests: 'tutorial',
      readyPods: 3,
      readyNamespace: 'production',
    });
    state = t.state;
    client = t.client;
  });

  after(async () => {
    if (prom?.pid !== undefined && prom.exitCode === null && prom.signalCode === null) {
      const p = prom;
      const exited = new Promise<void>((r) => p.once('exit', () => r()));
      process.kill(p.pid!, 'SIGTERM');
      const t = setTimeout(() => {
        if (p.exitCode === null && p.signalCode === null) process.kill(p.pid!, 'SIGKILL');
      }, 5000);
      await exited;
      clearTimeout(t);
    }
    await t?.down();
    rmSync(work, { recursive: true, force: true });
  });

  test('the lab writes file_sd targets for every node, reachable from this machine', async () => {
    assert.ok(state.metricsTargets, 'the lab state names the targets file');
    const groups = JSON.parse(readFileSync(state.metricsTargets, 'utf8')) as {
      targets: string[];
      labels: Record<string, string>;
    }[];
    assert.deepEqual(
      groups.map((g) => g.targets),
      state.nodes.map((n) => [`${n.ip}:9965`]),
    );
    assert.deepEqual(
      groups.map((g) => g.labels.node),
      state.nodes.map((n) => n.name),
    );
    for (const g of groups) {
      const text = await eventually(async () => {
        const r = await fetch(`http://${g.targets[0]}/metrics`);
        return r.ok ? r.text() : '';
      }, 20_000);
      assert.match(text, /^# TYPE hubble_flows_processed_total counter$/m, g.targets[0]);
      assert.match(text, /^# TYPE cilium_endpoint_state gauge$/m);
      assert.match(text, /^hubble_lost_events_total\{source="hubble_ring_buffer"\} \d+$/m);
    }
  });

  test('after the default-deny, Prometheus sees POLICY_DENIED drops and processed flows', async () => {
    const port = await freePort();
    promUrl = `http://127.0.0.1:${port}`;
    const config = join(work, 'prometheus.yml');
    writeFileSync(
      config,
      [
        'global:',
        '  scrape_interval: 1s',
        '  evaluation_interval: 1s',
        'scrape_configs:',
        '  - job_name: hubble',
        '    scrape_interval: 1s',
        '    file_sd_configs:',
        `      - files: ['${state.metricsTargets}']`,
        '        refresh_interval: 1s',
        '',
      ].join('\n'),
    );
    const log = join(work, 'prometheus.log');
    prom = spawn(
      PROMETHEUS,
      [
        `--config.file=${config}`,
        `--storage.tsdb.path=${join(work, 'tsdb')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    prom.stderr?.on('data', (c: Buffer) => {
      stderr += c.toString();
      writeFileSync(log, stderr);
    });

    // Every agent is up for Prometheus before the policy goes in.
    const up = await eventually(async () => {
      const r = await query('up{job="hubble"}');
      return r.length === state.nodes.length && r.every((s) => s.value[1] === '1') ? r : undefined;
    }, 30_000);
    assert.ok(up, `every target up (prometheus log: ${stderr})`);

    const pods = (await client.json<{ items: Pod[] }>('GET', '/api/v1/namespaces/production/pods')).items;
    const gw = pods.find((p) => p.metadata.name.startsWith('api-gateway-'))!;
    const catalog = pods.find((p) => p.metadata.name.startsWith('catalog-'))!;
    const curl = async () =>
      (await t!.curl(gw, `http://${catalog.status!.podIP}:8080/`, [], 1)) === '200' ? 0 : 1;
    // Traffic before the policy is forwarded; after it, dropped.
    assert.equal(await curl(), 0, 'allowed before the default-deny');
    assert.equal(
      await applyFiles(client, [join(TUTORIAL, '05.1-default-deny.yaml')], new PassThrough().resume()),
      0,
    );
    const drops = await eventually(async () => {
      assert.notEqual(await curl(), 0, 'the default-deny stops the request');
      const r = await query('hubble_drop_total{reason="POLICY_DENIED"}');
      return r.some((s) => Number(s.value[1]) > 0) ? r : undefined;
    }, 60_000);
    assert.ok(drops, 'hubble_drop_total{reason="POLICY_DENIED"} > 0');
    assert.ok(drops.every((s) => s.metric.protocol === 'TCP' || s.metric.protocol === 'UDP'));
    assert.ok(drops.some((s) => s.metric.job === 'hubble' && s.metric.node?.startsWith('hyhblab-')));

    const flows = await query('sum by (type, verdict) (hubble_flows_processed_total)');
    assert.ok(
      flows.some((s) => s.metric.verdict === 'DROPPED' && Number(s.value[1]) > 0),
      JSON.stringify(flows),
    );
    assert.ok(flows.some((s) => s.metric.verdict === 'FORWARDED' && Number(s.value[1]) > 0));
    const endpoints = await query('sum(cilium_endpoint_state{endpoint_state="ready"})');
    assert.ok(Number(endpoints[0]?.value[1]) >= 3, JSON.stringify(endpoints));
  });
});

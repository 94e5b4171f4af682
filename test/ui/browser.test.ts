/**
 * The Hubble UI as the tutorial opens it (section 6.4), in headless Chromium: a lab with
 * hubble.ui.enabled runs the UI next to its relay; the tutorial's workloads talk, the
 * tutorial's default-deny drops api-gateway's calls to catalog; the page, driven with real
 * mouse events over the DevTools protocol, shows the workloads and a red edge, and
 * clicking that edge fills the flow table with its DROPPED flows, naming the policy.
 * The screenshot is saved to dist/test-artifacts/ui-map.png.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { applyFiles } from '../../src/cli/commands/lab.js';
import type { LabState } from '../../src/lab/lab.js';
import { repoRoot, skipUnlessPrivileged } from '../helpers/kernel.js';
import { type LabFixture, type Pod, startLab, TUTORIAL } from '../helpers/lab.js';
import { Chromium, type Page } from './cdp.js';

const NAME = 'hyuilab';
export const SCREENSHOT = join(repoRoot, 'dist/test-artifacts/ui-map.png');
const DROPPED_EDGE = 'workload:production/api-gateway->workload:production/catalog';

describe('Hubble UI in headless Chromium, in a lab', { skip: skipUnlessPrivileged() }, () => {
  let state: LabState;
  let browser: Chromium | undefined;

  let t: LabFixture | undefined;
  const pods = (app: string) => t!.pods(`app=${app}`, 'production');
  const curl = async (from: Pod, url: string) => ({ stdout: await t!.curl(from, url) });

  before(async () => {
    t = await startLab({
      name: NAME,
      underlayOctet: 219,
      // The tutorial's Hubble values.
      values: { hubble: { enabled: true, relay: { enabled: true }, ui: { enabled: true } } },
      manifests: 'tutorial',
      readyPods: 12,
    });
    state = t.state;
  });

  after(async () => {
    await browser?.close();
    await t?.down();
  });

  test('the lab runs the UI next to the relay when hubble.ui.enabled', async () => {
    assert.ok(state.ui && 'url' in state.ui, `lab state: ${JSON.stringify(state.ui)}`);
    const r = await fetch(`${state.ui.url}/`);
    assert.equal(r.status, 200);
    assert.match(await r.text(), /<svg id="map"/);
  });

  test("after the tutorial's default-deny the map shows the workloads and a red edge; its flows are DROPPED", async () => {
    assert.ok(state.ui && 'url' in state.ui);
    const ui = state.ui.url;
    const [gw] = await pods('api-gateway');
    const [front] = await pods('frontend');
    const catalogs = await pods('catalog');
    const far = catalogs.find((p) => p.spec.nodeName !== gw!.spec.nodeName) ?? catalogs[0]!;
    // Allowed traffic first: the workloads and their edges.
    for (let i = 0; i < 3; i++) {
      assert.equal((await curl(gw!, `http://${far.status!.podIP}:8080/`)).stdout, '200');
      assert.equal((await curl(front!, 'http://catalog.production.svc.cluster.local:8080/')).stdout, '200');
      assert.equal((await curl(gw!, 'http://frontend:8080/')).stdout, '200');
    }
    const sink = new PassThrough();
    sink.resume();
    assert.equal(await applyFiles(t!.client, [join(TUTORIAL, '05.1-default-deny.yaml')], sink), 0);
    let status = '';
    for (let i = 0; i < 20 && status !== '000'; i++)
      status = (await curl(gw!, `http://${far.status!.podIP}:8080/`)).stdout;
    assert.equal(status, '000', 'the default deny drops api-gateway -> catalog');
    for (let i = 0; i < 2; i++) await curl(gw!, `http://${far.status!.podIP}:8080/`);

    browser = await Chromium.launch();
    const page = await browser.page(1440, 960);
    // On a failure: what the server had, and what the page showed.
    const explain = async (err: unknown) => {
      mkdirSync(join(repoRoot, 'dist/test-artifacts'), { recursive: true });
      const shot = join(repoRoot, 'dist/test-artifacts/ui-map-failure.png');
      writeFileSync(shot, await page.screenshot().catch(() => Buffer.alloc(0)));
      const get = (path: string) =>
        fetch(`${ui}${path}`)
          .then((r) => r.text())
          .catch((e: Error) => e.message);
      const map = JSON.parse(await get('/api/map?namespace=production')) as {
        edges: { id: string; forwarded: number; dropped: number }[];
      };
      throw new Error(
        `${(err as Error).message}\nmap edges: ${JSON.stringify(map.edges.map((e) => [e.id, e.forwarded, e.dropped]))}\nstatus: ${await get('/api/status')}\nscreenshot: ${shot}`,
        { cause: err },
      );
    };
    try {
      await run(page, async () => (await curl(gw!, `http://${far.status!.podIP}:8080/`)).stdout);
    } catch (err) {
      await explain(err);
    }
  });

  /** The browser's part; `call` makes api-gateway call catalog once more (and gives the HTTP status). */
  async function run(page: Page, call: () => Promise<string>): Promise<void> {
    assert.ok(state.ui && 'url' in state.ui);
    const ui = state.ui.url;
    await page.send('Page.navigate', { url: `${ui}/` });
    await page.waitFor("document.readyState === 'complete' && !!window.HyphaMap", 'the page to load');

    // The namespace picker lists production; choose it as a user would.
    await page.waitFor(
      "[...document.querySelectorAll('#namespace option')].some((o) => o.value === 'production')",
      'the production namespace in the picker',
    );
    await page.eval(`(() => {
      const s = document.getElementById('namespace');
      s.value = 'production';
      s.dispatchEvent(new Event('change', { bubbles: true }));
    })()`);

    const names = await page.waitFor<string[]>(
      `(() => {
        const names = [...document.querySelectorAll('#map g.node')].map((n) => n.dataset.name);
        const red = document.querySelector('#map g.edge[data-verdict="dropped"][data-edge-id="${DROPPED_EDGE}"]');
        return ['frontend', 'api-gateway', 'catalog'].every((n) => names.includes(n)) && red ? names : null;
      })()`,
      'the workloads and the dropped api-gateway -> catalog edge on the map',
    );
    assert.ok(names.includes('kube-dns'), `the DNS node: ${names.join(', ')}`);
    const edge = await page.eval<{ dropped: number; forwarded: number; stroke: string }>(`(() => {
      const e = document.querySelector('#map g.edge[data-edge-id="${DROPPED_EDGE}"]');
      return {
        dropped: Number(e.dataset.dropped),
        forwarded: Number(e.dataset.forwarded),
        stroke: getComputedStyle(e.querySelector('path.line')).stroke,
      };
    })()`);
    assert.ok(edge.dropped > 0 && edge.forwarded > 0, JSON.stringify(edge));
    assert.equal(edge.stroke, 'rgb(217, 48, 37)', 'a dropped edge is drawn red');
    const label = await page.eval<string>(
      `document.querySelector('#map [data-label-of="${DROPPED_EDGE}"]').textContent`,
    );
    assert.match(label, /✓ \d+.*✗ [1-9]\d*/);

    // Click the edge's label with the mouse.
    const at = await page.eval<{ x: number; y: number }>(`(() => {
      const l = document.querySelector('#map [data-label-of="${DROPPED_EDGE}"]');
      l.scrollIntoView({ block: 'center', inline: 'center' });
      const r = l.getBoundingClientRect();
      return { x: r.left + r.width / 2, y: r.top + r.height / 2 };
    })()`);
    await page.click(at.x, at.y);

    const rows = await page.waitFor<{ verdict: string; edge: string; reason: string; policy: string }[]>(
      `(() => {
        if (document.getElementById('details').dataset.selected !== '${DROPPED_EDGE}') return null;
        const rows = [...document.querySelectorAll('#flows tbody tr[data-verdict]')].map((r) => ({
          verdict: r.dataset.verdict,
          edge: r.dataset.edge,
          reason: r.querySelector('.reason').textContent,
          policy: r.querySelector('.policy').textContent,
        }));
        return rows.length && rows.every((r) => r.edge === '${DROPPED_EDGE}') && rows.some((r) => r.verdict === 'DROPPED')
          ? rows
          : null;
      })()`,
      'the flow table to show the edge flows',
    );
    const dropped = rows.filter((r) => r.verdict === 'DROPPED');
    assert.ok(dropped.length >= 1);
    assert.ok(
      dropped.every((r) => r.reason === 'Policy denied'),
      JSON.stringify(dropped),
    );
    assert.ok(
      dropped.some((r) => /denied by NetworkPolicy production\/default-deny-all/.test(r.policy)),
      `the default deny names its policy: ${JSON.stringify(dropped)}`,
    );
    // Live: a new drop reaches the open page, on the edge's count and in the table.
    const before = await page.eval<number>(
      `Number(document.querySelector('#map g.edge[data-edge-id="${DROPPED_EDGE}"]').dataset.dropped)`,
    );
    const rowsBefore = rows.length;
    assert.equal(await call(), '000');
    await page.waitFor(
      `Number(document.querySelector('#map g.edge[data-edge-id="${DROPPED_EDGE}"]').dataset.dropped) > ${before} &&
        document.querySelectorAll('#flows tbody tr[data-verdict="DROPPED"]').length > ${rows.filter((r) => r.verdict === 'DROPPED').length}`,
      `the new drop to show without a reload (had ${before} on the edge, ${rowsBefore} rows)`,
    );
    assert.equal(
      await page.eval<string>("document.getElementById('selection-label').textContent"),
      'api-gateway → catalog',
    );
    assert.match(await page.eval<string>("document.getElementById('details').textContent"), /dropped/);

    // The screenshot, with the edge selected and its flows listed.
    const png = await page.screenshot();
    assert.deepEqual([...png.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47], 'a PNG');
    assert.ok(png.length > 20_000, `screenshot of ${png.length} bytes`);
    mkdirSync(join(repoRoot, 'dist/test-artifacts'), { recursive: true });
    writeFileSync(SCREENSHOT, png);
    console.log(`UI screenshot saved to ${SCREENSHOT}`);
    assert.deepEqual(page.errors, [], 'no script errors on the page');
  }
});

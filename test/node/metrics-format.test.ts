/**
 * `/metrics` of a real node is valid Prometheus text that promtool accepts: every counter ends in
 * `_total` and nothing else does, no name stutters, and each scrape parses.
 */
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestNode, type TestNode } from '../helpers/test-node.js';
import { waitFor } from '../helpers/wait-for.js';

let node: TestNode;
let text: string;

beforeAll(async () => {
  node = await startTestNode('rbee-metrics-');
  // a request first, so the labelled request counter has samples, not only its header
  expect((await fetch(`${node.url}/health`)).status).toBe(200);
  // and the cluster link up (it starts after the API), so its frame counters are there too
  text = await waitFor(
    async () => {
      const scraped = await (await fetch(`${node.url}/metrics`)).text();
      return scraped.includes('rbee_p2p_frames_refused_total{') ? scraped : undefined;
    },
    { what: 'the p2p frame counters in /metrics' },
  );
});
afterAll(() => node.stop());

/** `# TYPE name type` lines as [name, type]. */
function types(exposition: string): Array<[string, string]> {
  return exposition
    .split('\n')
    .filter((line) => line.startsWith('# TYPE '))
    .map((line) => {
      const [, , name = '', type = ''] = line.split(' ');
      return [name, type];
    });
}

const promtool = spawnSync('promtool', ['--version']).error === undefined;

describe('/metrics', () => {
  it('names every metric rbee_*, without a doubled process_ prefix', () => {
    const names = types(text).map(([name]) => name);
    expect(names.length).toBeGreaterThan(20);
    expect(names.filter((n) => !n.startsWith('rbee_'))).toEqual([]);
    expect(names.filter((n) => n.includes('process_process_'))).toEqual([]);
    expect(names).toContain('rbee_process_resident_memory_bytes');
    expect(names).toContain('rbee_nodejs_eventloop_lag_seconds');
    expect(text).toContain('rbee_p2p_frames_refused_total{reason="malformed"} 0');
  });

  it('ends counter names, and only counter names, in _total', () => {
    const all = types(text);
    expect(all.filter(([name, type]) => type !== 'counter' && name.endsWith('_total'))).toEqual([]);
    expect(all.filter(([name, type]) => type === 'counter' && !name.endsWith('_total'))).toEqual([]);
  });

  it.skipIf(!promtool)(
    `passes promtool check metrics${promtool ? '' : ' (skipped: promtool is not on PATH)'}`,
    () => {
      const checked = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
      expect(`${checked.stdout}${checked.stderr}`.trim()).toBe('');
      expect(checked.status).toBe(0);
    },
  );
});

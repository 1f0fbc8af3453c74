/**
 * Model names across a cluster: two real `rbee node` processes on loopback. A model that only the
 * other hive holds (a file on its own disk) is listed by the node asked, under its name, and served
 * by that name: the job runs on the hive that has it.
 */
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ndjson, runCli, type Sandbox } from '../helpers/cli.js';
import { pullModelOnlyOn, startPair, type ClusterNodeProcess } from '../helpers/cluster-nodes.js';
import { waitFor } from '../helpers/wait-for.js';

const sandboxes: Sandbox[] = [];
let alpha: ClusterNodeProcess;
let beta: ClusterNodeProcess;

beforeAll(async () => {
  [alpha, beta] = await startPair(sandboxes);
});

afterAll(async () => {
  await Promise.all(sandboxes.map((s) => s.cleanup()));
});

describe('model names in a cluster of two', () => {
  it("lists another hive's model under its name, without its path, and serves it by that name there", async () => {
    // a file only beta's machine has
    await pullModelOnlyOn(beta, 'Beta-Only-Q8_0.gguf');

    const openai = new OpenAI({ baseURL: `${alpha.sandbox.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const listed = await waitFor(
      async () => (await openai.models.list()).data.find((m) => m.owned_by === 'beta'),
      { what: "beta's model in alpha's list" },
    );
    expect(listed.id).toMatch(/^beta-only:/);
    expect(listed).toMatchObject({ hives: ['beta'] });
    expect(JSON.stringify(listed)).not.toContain(beta.sandbox.home);

    const infer = await runCli(['infer', '-m', listed.id, 'Hello', '--max-tokens', '2', '--json'], {
      env: alpha.sandbox.env,
    });
    expect(infer.code, infer.stderr).toBe(0);
    const events = ndjson(infer.stdout);
    expect(events.at(-1)).toMatchObject({ type: 'done' });
    expect(events.some((e) => e.type === 'narration' && e.node === 'beta')).toBe(true);
  });
});

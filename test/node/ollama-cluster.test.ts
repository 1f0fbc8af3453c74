/**
 * Ollama's API is the cluster's on every node: two real `rbee node` processes on loopback. A model
 * only the other hive holds is listed by the node asked, served through it by its name, and its
 * worker there shows in that node's `/api/ps` until `keep_alive: 0` through it unloads the model.
 */
import { Ollama } from 'ollama';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Sandbox } from '../helpers/cli.js';
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

describe('Ollama API in a cluster of two', () => {
  it("lists, serves, shows and unloads the running worker of another hive's model", async () => {
    // a file only beta's machine has
    await pullModelOnlyOn(beta, 'Beta-Only-Q8_0.gguf');

    const ollama = new Ollama({ host: alpha.sandbox.url });
    const listed = await waitFor(
      async () => (await ollama.list()).models.find((m) => m.name.startsWith('beta-only:')),
      { what: "beta's model in alpha's /api/tags" },
    );
    expect(listed.details.family).toBe('llama');
    expect(listed.size).toBeGreaterThan(0);

    const answer = await ollama.chat({
      model: listed.name,
      messages: [{ role: 'user', content: 'Hello' }],
      stream: false,
      options: { num_predict: 3 },
    });
    expect(answer).toMatchObject({ done: true, eval_count: 3, model: listed.name });

    const running = await waitFor(
      async () => (await ollama.ps()).models.find((m) => m.name === listed.name),
      { what: "beta's worker in alpha's /api/ps" },
    );
    expect(running.size).toBeGreaterThan(0);
    // the worker is beta's: alpha runs none of its own
    const own = (await (await fetch(`${alpha.sandbox.url}/v1/workers`)).json()) as { workers: unknown[] };
    expect(own.workers).toEqual([]);

    // keep_alive 0 through alpha unloads the model on beta
    const unloaded = await ollama.chat({ model: listed.name, messages: [], keep_alive: 0 });
    expect(unloaded.done_reason).toBe('unload');
    await waitFor(async () => !(await ollama.ps()).models.some((m) => m.name === listed.name), {
      what: "beta's worker to leave alpha's /api/ps",
    });
    expect(new Date(running.expires_at).getTime()).toBeGreaterThan(Date.now());
  });
});

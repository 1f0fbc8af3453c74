/**
 * `rbee place` in a cluster: two real `rbee node` processes on loopback (static peers). The table
 * is computed on the node asked, over every member's published hive state, so it lists both hives
 * and follows what each holds.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { placePreviewSchema, type PlacePreview } from '../../src/shared/view.js';
import { runCli, type Sandbox } from '../helpers/cli.js';
import { startPair, type ClusterNodeProcess } from '../helpers/cluster-nodes.js';
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

async function place(node: ClusterNodeProcess, ...args: string[]): Promise<PlacePreview> {
  const result = await runCli(['place', ...args, '--json'], { env: node.sandbox.env });
  expect(result.code, result.stderr).toBe(0);
  return placePreviewSchema.parse(JSON.parse(result.stdout));
}

describe('rbee place in a cluster of two', () => {
  it('lists both hives, and the one that holds the model first once the other has it on disk', async () => {
    await waitFor(async () => (await place(alpha, 'demo')).options.length === 2, {
      what: "beta's hive state on alpha",
    });
    const before = await place(alpha, 'demo');
    expect(before.node).toBe('alpha');
    expect(before.options.map((o) => [o.name, o.kind]).sort()).toEqual([
      ['alpha', 'provision'],
      ['beta', 'provision'],
    ]);

    const pull = await runCli(['models', 'pull', 'demo', '--json'], { env: beta.sandbox.env });
    expect(pull.code, pull.stderr).toBe(0);
    const after = await waitFor(
      async (): Promise<PlacePreview | undefined> => {
        const table = await place(alpha, 'demo');
        return table.options[0]?.name === 'beta' ? table : undefined;
      },
      { what: "beta's model to show in alpha's table" },
    );
    expect(after.placement).toMatchObject({ name: 'beta', kind: 'on-disk' });
    expect(after.options.map((o) => [o.name, o.kind])).toEqual([
      ['beta', 'on-disk'],
      ['alpha', 'provision'],
    ]);
    expect(after.options[0]?.needed?.basis).toBe('estimated');
  });

  it('lists only the hive named with --on', async () => {
    const table = await place(alpha, 'demo', '--on', 'beta');
    expect(table.options.map((o) => o.name)).toEqual(['beta']);
  });
});

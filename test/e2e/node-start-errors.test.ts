/**
 * A node started in the background (`rbee node start`, `rbee`, any command that wakes it) that exits
 * before it is ready: the user hears why, with the node's own error code, not only that it exited.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSandbox, runCli, type Sandbox } from '../helpers/cli.js';

let box: Sandbox;
beforeAll(async () => {
  box = await createSandbox();
  writeFileSync(join(box.home, 'config.json'), JSON.stringify({ slots: 0 }));
});
afterAll(async () => {
  await box.cleanup();
});

describe('a node that cannot start', () => {
  it('reports the error it printed, with its code, in --json and as text', async () => {
    const json = await runCli(['node', 'start', '--json'], { env: box.env });
    expect(json.code).toBe(2);
    const { error } = JSON.parse(json.stdout) as { error: { code: string; message: string } };
    expect(error.code).toBe('CONFIG_INVALID');
    expect(error.message).toContain(join(box.home, 'config.json'));
    expect(error.message).toContain('slots');

    // a command that wakes the node on its own says the same
    const models = await runCli(['models', 'ls'], { env: box.env });
    expect(models.code).toBe(2);
    expect(models.stderr).toContain('error CONFIG_INVALID:');
    expect(box.pids()).toEqual([]);
  });
});

/**
 * A node started in the background (`rbee node start`, `rbee`, any command that wakes it) that exits
 * before it is ready: the user hears why, with the node's own error code, not only that it exited.
 */
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
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

  it('on a port another program serves, says the port is taken (not what that program answered)', async () => {
    const other = await createSandbox();
    const server = createServer((_request, response) => {
      response.statusCode = 404;
      response.end('<!DOCTYPE html><title>not here</title>');
    });
    await new Promise<void>((resolve) => server.listen(other.port, '127.0.0.1', resolve));
    try {
      const start = await runCli(['node', 'start', '--json'], { env: other.env });
      expect(start.code).not.toBe(0);
      const { error } = JSON.parse(start.stdout) as { error: { code: string; message: string } };
      expect(error.code).toBe('PORT_IN_USE');
      expect(error.message).toContain(String(other.port));
      expect(other.pids()).toEqual([]);
    } finally {
      server.close();
      await other.cleanup();
    }
  });
});

import type { NetworkInterfaceInfo } from 'node:os';
import { describe, expect, it } from 'vitest';
import { ensureNodeAwake, isThisMachine } from '../../src/node/client/index.js';
import { RbeeError } from '../../src/shared/errors.js';
import { createFakeNodeClient } from '../tui/helpers.js';

const interfaces: Record<string, NetworkInterfaceInfo[]> = {
  eth0: [
    {
      address: '192.168.1.20',
      netmask: '255.255.255.0',
      family: 'IPv4',
      mac: '00:00:00:00:00:01',
      internal: false,
      cidr: '192.168.1.20/24',
    },
  ],
};

describe('which node the keeper may wake', () => {
  it('knows the addresses of this machine from those of others', () => {
    for (const host of [
      '127.0.0.1',
      '127.1.2.3',
      'localhost',
      '::1',
      '[::1]',
      '0.0.0.0',
      '::',
      '192.168.1.20',
    ]) {
      expect(isThisMachine(host, interfaces), host).toBe(true);
    }
    for (const host of ['192.168.1.21', 'gpu-box.local', '10.0.0.5']) {
      expect(isThisMachine(host, interfaces), host).toBe(false);
    }
  });

  it('does not start a node for an unanswering node on another machine, and says why', async () => {
    const client = createFakeNodeClient();
    // A node that does not answer; no network is used (the client is a fake).
    Object.assign(client, {
      health: () =>
        Promise.reject(new RbeeError('NODE_UNREACHABLE', 'no rbee node answers at http://192.0.2.10:7833')),
    });
    const narration: string[] = [];
    const woken = ensureNodeAwake({
      client,
      // a start would fail differently: this script does not exist
      mainScript: '/nonexistent/rbee-main.js',
      env: { RBEE_HOST: '192.0.2.10' },
      nodeLog: '/nonexistent/node.log',
      narrate: (text) => narration.push(text),
    });
    await expect(woken).rejects.toMatchObject({
      code: 'NODE_UNREACHABLE',
      message: expect.stringContaining('not started from here') as string,
    });
    expect(narration).toEqual([]);
  });
});

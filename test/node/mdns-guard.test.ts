/**
 * mDNS never runs outside a test-made network namespace: not in a node a test starts in its own
 * process, whatever config or environment it passes, and not in a p2p host built directly.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadNodeConfig } from '../../src/node/config.js';
import { inOwnNetworkNamespace } from '../../src/shared/mdns-guard.js';
import { generateClusterKey } from '../../src/p2p/keys.js';
import { createNodeClient } from '../../src/node/client/index.js';
import { createScope, memoryHost, rejection } from '../p2p/helpers.js';
import { startTestNode, type TestNode } from '../helpers/test-node.js';
import { waitFor } from '../helpers/wait-for.js';

describe('the mDNS guard', () => {
  it('is on in every test process, which runs outside any named namespace', () => {
    expect(process.env.RBEE_MDNS_REQUIRE_NETNS).toBe('1');
    expect(inOwnNetworkNamespace()).toBe(false);
  });

  it('reads the process environment, not the env a caller passes', () => {
    // an env without the guard and with mDNS on: refused all the same
    expect(() => loadNodeConfig({ dataDir: '/nonexistent-rbee', port: 0 }, { RBEE_MDNS: '1' })).toThrow(
      /mDNS refused/,
    );
    expect(() => loadNodeConfig({ dataDir: '/nonexistent-rbee', port: 0, mdns: true }, {})).toThrow(
      /mDNS refused/,
    );
  });

  it('refuses a p2p host asked for mDNS directly', async () => {
    const scope = createScope();
    try {
      const error = await rejection(memoryHost(scope, generateClusterKey(), { mdns: true }));
      expect(error.code).toBe('CONFIG_INVALID');
      expect(error.message).toMatch(/mDNS refused/);
    } finally {
      await scope.cleanup();
    }
  });
});

describe('a node a test starts in its own process', () => {
  let test: TestNode;
  beforeAll(async () => {
    test = await startTestNode('rbee-mdns-');
  });
  afterAll(async () => {
    await test.stop();
  });

  it('runs with mDNS off and listens for peers on loopback only', async () => {
    expect(test.config.cluster.mdns).toBe(false);
    const client = createNodeClient({ url: test.url });
    const status = await waitFor(
      async () => {
        const s = await client.cluster();
        return s.state === 'running' ? s : undefined;
      },
      { what: 'the cluster link to start' },
    );
    expect(status.mdns).toBe(false);
    expect(status.listen.length).toBeGreaterThan(0);
    for (const addr of status.listen) expect(addr).toMatch(/^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\//);
  });
});

/**
 * The one way a test starts a node in its own process: a temporary data directory, an ephemeral API
 * port, and cluster settings that keep every packet on this machine (mDNS off, peers on loopback),
 * whatever the caller's or the process's environment says.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadNodeConfig, type NodeConfig, type NodeConfigOverrides } from '../../src/node/config.js';
import { startNode, type RunningNode } from '../../src/node/daemon.js';

/** The environment of an in-process test node: only these variables, never the process's own. */
export const TEST_NODE_ENV: NodeJS.ProcessEnv = {
  RBEE_MDNS: '0',
  RBEE_CLUSTER_LISTEN: '/ip4/127.0.0.1/tcp/0',
  RBEE_MDNS_REQUIRE_NETNS: '1',
  // a real native build takes both cores for the better part of an hour: never in a test
  RBEE_ENGINE_BUILD: 'off',
};

export function testNodeConfig(home: string, overrides: NodeConfigOverrides = {}): NodeConfig {
  return loadNodeConfig(
    { dataDir: home, port: 0, logLevel: 'warn', ...overrides, mdns: false },
    TEST_NODE_ENV,
  );
}

export interface TestNode {
  node: RunningNode;
  home: string;
  url: string;
  config: NodeConfig;
  /** Stops the node and deletes its data directory. */
  stop(): Promise<void>;
}

export async function startTestNode(
  prefix = 'rbee-node-',
  overrides: NodeConfigOverrides = {},
  /** What the node's `config.json` holds (none by default). */
  file?: Record<string, unknown>,
): Promise<TestNode> {
  const home = mkdtempSync(join(tmpdir(), prefix));
  if (file !== undefined) writeFileSync(join(home, 'config.json'), JSON.stringify(file));
  const config = testNodeConfig(home, overrides);
  const node = await startNode(config);
  return {
    node,
    home,
    url: node.url,
    config,
    async stop() {
      await node.close('test done');
      rmSync(home, { recursive: true, force: true });
    },
  };
}

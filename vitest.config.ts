import { join } from 'node:path';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'test/**/*.test.tsx'],
    pool: 'forks',
    // These machines have 2 cores; more workers only make the real-process tests flaky.
    maxWorkers: 2,
    setupFiles: ['test/helpers/setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    globalSetup: ['test/helpers/global-setup.ts'],
    // Every node a test starts (in-process or spawned: children inherit this) talks to peers on
    // loopback only, with multicast discovery off; the namespace harness alone turns mDNS on, inside
    // namespaces it made, and a node refuses mDNS in the host's namespace while this guard is set.
    // CI=0: Ink draws only the last frame when CI is set (as on a CI runner); the tests check what a
    // person's terminal shows, the same on every machine.
    env: {
      CI: '0',
      RBEE_MDNS: '0',
      RBEE_MDNS_REQUIRE_NETNS: '1',
      RBEE_CLUSTER_LISTEN: '/ip4/127.0.0.1/tcp/0',
      // no test node builds llama.cpp at an idle moment (both cores for the better part of an hour)
      RBEE_ENGINE_BUILD: 'off',
      // rbee's native token loop is built (a few seconds) into the project's cache, not the home folder's
      RBEE_NATIVE_CACHE: join(import.meta.dirname, '.cache', 'native'),
    },
  },
});

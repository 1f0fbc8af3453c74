/**
 * The guard that keeps multicast discovery inside test-made network namespaces. With
 * `RBEE_MDNS_REQUIRE_NETNS=1` in the process environment (vitest sets it for every test; spawned
 * nodes inherit it), mDNS is refused unless this process runs in a named network namespace. It reads
 * `process.env` itself, whatever configuration or environment a caller passes, so no test can turn
 * it off by handing a node its own env.
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { RbeeError } from './errors.js';

/** Throws CONFIG_INVALID when mDNS is asked for outside a named network namespace while the guard is on. */
export function assertMdnsAllowed(): void {
  if (process.env.RBEE_MDNS_REQUIRE_NETNS !== '1' || inOwnNetworkNamespace()) return;
  throw new RbeeError(
    'CONFIG_INVALID',
    'mDNS refused: RBEE_MDNS_REQUIRE_NETNS=1 allows it only inside a named network namespace (ip netns)',
  );
}

/** True when this process runs in a named network namespace (`ip netns add`), as `ip netns identify` tells. */
export function inOwnNetworkNamespace(): boolean {
  try {
    const self = statSync('/proc/self/ns/net').ino;
    return readdirSync('/run/netns').some((name) => statSync(join('/run/netns', name)).ino === self);
  } catch {
    return false; // not Linux, or no named namespaces: not provably isolated
  }
}

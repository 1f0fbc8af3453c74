/**
 * What `GET /v1/cluster` says while this node has no cluster link: clustering is off (the hive is
 * its own queen), the link is still starting, or it failed (with the reason).
 */
import type { ClusterStatus, HiveView } from '../../shared/view.js';
import type { ClusterConfig } from '../config.js';

export function aloneStatus(init: {
  config: ClusterConfig;
  nodeName: string;
  state: Exclude<ClusterStatus['state'], 'running'>;
  error: ClusterStatus['error'];
  hives: HiveView[];
}): ClusterStatus {
  const { config, nodeName, state } = init;
  return {
    enabled: config.enabled,
    state,
    self: { id: nodeName, name: nodeName },
    // a hive alone is its own queen
    queen: state === 'disabled' ? { id: nodeName, name: nodeName, term: 0 } : null,
    isQueen: state === 'disabled',
    term: 0,
    mdns: config.enabled && config.mdns,
    listen: [],
    staticPeers: config.peers,
    members: [],
    hives: init.hives,
    duplicates: [],
    ...(init.error === undefined ? {} : { error: init.error }),
  };
}

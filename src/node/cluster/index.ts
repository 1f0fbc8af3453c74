/**
 * This node's part in the cluster: the link to the p2p layer (membership, the queen, the shared
 * view), and the protocol of methods and streams that nodes speak to each other. Loaded lazily, after
 * the API is up, so that libp2p's module load never delays a wake.
 */
export { startClusterLink, type ClusterLink, type ClusterLinkInit } from './link.js';
export {
  hiveKeys,
  hiveShutdown,
  hiveStopWorker,
  queenKeys,
  queenShutdown,
  type ClusterShutdown,
} from './protocol.js';
export type { KeyReplication } from './key-sync.js';
export { aloneStatus } from './alone-status.js';

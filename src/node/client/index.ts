export {
  createNodeClient,
  type ClusterShutdown,
  type NodeClient,
  type NodeClientInit,
} from './node-client.js';
export { ensureNodeAwake, isAlive, isThisMachine, stopNode, type Awake, type WakeInit } from './launcher.js';

/**
 * The queen: active on the elected node (and on a node alone, its own queen). Its scheduler places
 * every job of the cluster on the best hive and explains the choice; its queue holds the jobs that
 * have no room yet, in turn, and counts the slots it handed out.
 */
export {
  schedule,
  place,
  neededBytes,
  backendRank,
  reserveOf,
  type PlacementRequest,
  type HiveCandidate,
  type Placement,
  type PlacementKind,
  type PlacementOption,
  type Schedule,
  type Device,
} from './scheduler.js';
export {
  createPlacementQueue,
  type PlacementQueue,
  type Priority,
  type QueueDepth,
  type QueuePosition,
  type QueueRequest,
  type Ticket,
} from './queue.js';

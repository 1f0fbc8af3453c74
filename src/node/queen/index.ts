/**
 * The queen: active on the elected node (and on a node alone, its own queen). Its scheduler places
 * every job of the cluster on the best hive and explains the choice; its queue holds the jobs that
 * have no room yet, in turn, and counts the slots it handed out. The preview shows the scheduler's
 * whole table for a model (`rbee place`).
 */
export {
  schedule,
  place,
  neededBytes,
  backendRank,
  reserveOf,
  hiveDevices,
  fitsOn,
  strongestDeviceWithRoom,
  DEFAULT_RESERVE_BYTES,
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
export { previewPlacement, median, type PastJob, type PreviewInput } from './preview.js';

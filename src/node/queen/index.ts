/**
 * The queen: active on the elected node. Its scheduler places every job of the cluster on the best
 * hive, and explains the choice.
 */
export {
  schedule,
  place,
  neededBytes,
  backendRank,
  type PlacementRequest,
  type HiveCandidate,
  type Placement,
  type PlacementKind,
  type PlacementOption,
  type Schedule,
  type Device,
} from './scheduler.js';

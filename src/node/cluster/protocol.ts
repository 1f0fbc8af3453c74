/**
 * Every method and stream that nodes of one cluster speak to each other on top of the p2p layer's
 * rpc and stream protocols: one place to read what crosses the wire between nodes, and its schemas.
 */
import { z } from 'zod';
import { defineMethod } from '../../p2p/index.js';

/** Node → the hive that runs a worker: stop it (what `rbee workers stop` and the dashboard send). */
export const hiveStopWorker = defineMethod(
  'hive.stopWorker',
  z.object({ id: z.string().min(1).max(128) }),
  z.object({ forced: z.boolean() }),
);

/** Queen → hive: stop. Carries the queen's term; hives refuse older terms (fencing). */
export const hiveShutdown = defineMethod(
  'hive.shutdown',
  z.object({ term: z.number().int().min(0), reason: z.string().max(200) }),
  z.object({ stopping: z.literal(true) }),
);
/** Any node → queen: stop the whole cluster (the caller stops itself). */
export const queenShutdown = defineMethod(
  'queen.shutdown',
  z.object({}),
  z.object({ queen: z.string(), term: z.number().int(), hives: z.array(z.string()) }),
);

export interface ClusterShutdown {
  queen: string;
  term: number;
  /** Peer ids of the hives that stop besides the node that asked (the queen among them). */
  hives: string[];
}

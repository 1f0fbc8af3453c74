/**
 * `npm run soak`: a cluster under load and faults loses no job and no byte (test/helpers/soak.ts).
 * SOAK_S sets the length in seconds (default 600), SOAK_SEED the fault schedule (printed; the same
 * seed replays it), SOAK_NODES the cluster's size (3 or 4). Exits non-zero when a promise is not
 * met, or where this machine cannot make network namespaces. Ctrl-C stops the run and removes every
 * namespace, process and directory it made.
 */
import '../src/shared/polyfill.js';
import { netnsSupport } from '../test/helpers/netns.js';
import { formatReport, runSoak } from '../test/helpers/soak.js';

const support = netnsSupport();
if (!support.ok) {
  console.error(`soak: cannot run here: ${support.reason}`);
  process.exit(1);
}
const seed = Number(process.env.SOAK_SEED ?? Math.floor(Math.random() * 1_000_000));
const durationS = Number(process.env.SOAK_S ?? 600);
const nodes = Number(process.env.SOAK_NODES ?? 3);
const stop = new AbortController();
process.once('SIGINT', () => stop.abort(new Error('interrupted')));
process.once('SIGTERM', () => stop.abort(new Error('terminated')));
try {
  const report = await runSoak({ seed, durationS, nodes, log: console.log, signal: stop.signal });
  console.log(formatReport(report));
  process.exitCode = report.problems.length === 0 ? 0 : 1;
} catch (error) {
  console.error(`soak (seed ${seed}) stopped: ${(error as Error).message}`);
  process.exitCode = 1;
}

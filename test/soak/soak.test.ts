/**
 * `npm run soak` for 60 seconds: three real nodes in network namespaces under continuous load from a
 * client in each namespace, while a seeded schedule kills a worker, a node and the queen, cuts a
 * node off the LAN, fills a hive's disk during a download, cuts a model transfer and kills a node
 * as a pulled file lands. No job may be lost, every failure must carry a documented code that a fault
 * explains, and the cluster must end with one queen, final jobs rows and catalogs that match their
 * disks. Skips (saying why) where this machine does not allow network namespaces.
 */
import { describe, expect, it } from 'vitest';
import { netnsSupport } from '../helpers/netns.js';
import { formatReport, runSoak } from '../helpers/soak.js';

const support = netnsSupport();
const SEED = Number(process.env.SOAK_SEED ?? 1);
const title = support.ok
  ? `a cluster under load and faults for 60 s (seed ${SEED})`
  : `a cluster under load and faults: SKIPPED, ${support.reason}`;

describe.skipIf(!support.ok)(title, () => {
  it('loses no job, explains every failure, and ends with one queen and consistent disks', async () => {
    const report = await runSoak({ seed: SEED, durationS: 60, nodes: 3 });
    const text = formatReport(report);
    expect(report.faults.map((f) => f.kind).sort(), text).toEqual([
      'cut-transfer',
      'disk-full',
      'kill-node',
      'kill-queen',
      'kill-worker',
      'partition',
      'restart-in-catalog-write',
    ]);
    expect(report.jobs.completed, text).toBeGreaterThan(0);
    expect(report.jobs.lost, text).toBe(0);
    expect(report.problems, text).toEqual([]);
  }, 600_000);
});

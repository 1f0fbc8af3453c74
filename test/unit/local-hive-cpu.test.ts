/**
 * What a hive publishes of its machine before its GPU probe has answered (the node is ready, the
 * probe takes a few hundred milliseconds more): the CPU as the OS describes it, not zeros, so a
 * queen's placement and a script's `rbee --json` read this machine from the first moment.
 */
import { availableParallelism, cpus } from 'node:os';
import { describe, expect, it } from 'vitest';
import type { DeviceInfo } from '../../src/engine/types.js';
import { createLocalHive, type LocalHiveInit } from '../../src/node/hive/local-hive.js';

function hiveWith(devices: DeviceInfo | undefined) {
  const init = {
    id: () => 'hive-1',
    name: 'h1',
    health: () => ({ state: 'ready' }),
    devices: () => devices,
    backend: 'auto',
    catalog: { list: () => [] },
    provisioner: { inProgress: () => [] },
    workers: { list: () => [], heldOn: () => 0 },
    reserveBytes: 0,
    slotsPerWorker: 1,
  } as unknown as LocalHiveInit;
  return createLocalHive(init);
}

describe('a hive before its GPU probe has answered', () => {
  it("publishes this machine's CPU", () => {
    const { cpu, backends, gpus } = hiveWith(undefined).state().hive;
    expect(cpu.model).toBe(cpus()[0]!.model.trim());
    expect(cpu.logicalCores).toBe(availableParallelism());
    expect(cpu.physicalCores).toBeGreaterThan(0);
    expect(cpu.physicalCores).toBeLessThanOrEqual(cpu.logicalCores);
    expect({ backends, gpus }).toEqual({ backends: ['cpu'], gpus: [] });
  });

  it('and once it has, what the probe found', () => {
    const probed = { model: 'Probed CPU', arch: 'x64', physicalCores: 3, logicalCores: 6 };
    const devices = {
      cpu: probed,
      memory: { totalBytes: 1, freeBytes: 1 },
      gpus: [],
      backends: ['cpu'],
    } as DeviceInfo;
    expect(hiveWith(devices).state().hive.cpu).toMatchObject({ model: 'Probed CPU', logicalCores: 6 });
  });
});

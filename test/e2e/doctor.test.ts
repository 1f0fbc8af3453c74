/** `rbee doctor` against a real node: it wakes the node, loads the real llama.cpp binary, and reports. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { doctorReportSchema } from '../../src/shared/view.js';
import { createSandbox, runCli, type Sandbox } from '../helpers/cli.js';

let box: Sandbox;
beforeEach(async () => {
  box = await createSandbox();
});
afterEach(() => box.cleanup());

describe('rbee doctor', () => {
  it('reports the llama.cpp binary, CPU features, threads, GPUs and disk of this machine', async () => {
    const json = await runCli(['doctor', '--json'], { env: box.env });
    expect(json.code, json.stderr).toBe(0);
    const report = doctorReportSchema.parse(JSON.parse(json.stdout));
    expect(report.checks.map((c) => c.id)).toEqual([
      'node',
      'llama-binary',
      'native-build',
      'cpu-features',
      'threads',
      'gpu',
      'disk',
    ]);
    expect(report.checks.some((c) => c.status === 'fail')).toBe(false);
    // the binary a CPU worker loads here, as node-llama-cpp reports it
    expect('binary' in report.engine && ['prebuilt', 'localBuild'].includes(report.engine.binary)).toBe(true);
    expect(report.node.nodeVersion).toBe(process.versions.node);
    // a fresh data directory has no decision: CPU workers load the prebuilt binary, and it says why
    expect(report.binary).toMatchObject({ workers: 'prebuilt', why: expect.any(String) as string });
    expect(report.binary?.decision).toBeUndefined();

    const plain = await runCli(['doctor'], { env: box.env });
    expect(plain.code).toBe(0);
    expect(plain.stdout).toMatch(/^rbee \S+ on \S+ \(/);
    expect(plain.stdout).toMatch(/^✓ Node v\d+/m);
    expect(plain.stdout).toMatch(/generation threads? on \d+ physical cores?/);
    expect(plain.stdout).toMatch(/^• CPU workers load the prebuilt binary/m);
    expect(plain.stdout).toContain('`rbee doctor --fix`');
    // the node it woke is stopped again
    expect(box.pids()).toEqual([]);
  }, 120_000);
});

/**
 * A node's `engineBuild` setting and its idle threshold: read from config.json or the environment,
 * `idle` after 10 minutes by default; the test environments themselves turn it off.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadNodeConfig } from '../../src/node/config.js';
import { onBattery } from '../../src/node/hive/idle-build.js';
import { loneNodeEnv } from '../helpers/cli.js';
import { testNodeConfig } from '../helpers/test-node.js';

const homes: string[] = [];
afterEach(() => {
  for (const home of homes.splice(0)) rmSync(home, { recursive: true, force: true });
});

function home(file?: Record<string, unknown>): string {
  const dir = mkdtempSync(join(tmpdir(), 'rbee-config-'));
  homes.push(dir);
  if (file !== undefined) writeFileSync(join(dir, 'config.json'), JSON.stringify(file));
  return dir;
}

const config = (file: Record<string, unknown> | undefined, env: NodeJS.ProcessEnv = {}) =>
  loadNodeConfig({ dataDir: home(file) }, { RBEE_CLUSTER: '0', ...env });

describe('the engineBuild setting', () => {
  it('builds at an idle moment after 10 minutes by default, else as config.json, else as the environment says', () => {
    expect(config(undefined)).toMatchObject({ engineBuild: 'idle', engineBuildIdleS: 600 });
    expect(config({ engineBuild: 'off', engineBuildIdleS: 120 })).toMatchObject({
      engineBuild: 'off',
      engineBuildIdleS: 120,
    });
    expect(
      config({ engineBuild: 'off' }, { RBEE_ENGINE_BUILD: 'idle', RBEE_ENGINE_BUILD_IDLE_S: '30' }),
    ).toMatchObject({ engineBuild: 'idle', engineBuildIdleS: 30 });
  });

  it('refuses what it does not know', () => {
    expect(() => config(undefined, { RBEE_ENGINE_BUILD: 'always' })).toThrow(
      /RBEE_ENGINE_BUILD must be idle or off/,
    );
    expect(() => config(undefined, { RBEE_ENGINE_BUILD_IDLE_S: '0' })).toThrow(/RBEE_ENGINE_BUILD_IDLE_S/);
    expect(() => config({ engineBuild: true })).toThrow(/engineBuild/);
  });

  it('is off for every node a test starts, in process or as a process, and for the test run itself', () => {
    expect(testNodeConfig(home()).engineBuild).toBe('off');
    expect(loneNodeEnv(home(), 0).RBEE_ENGINE_BUILD).toBe('off');
    expect(process.env.RBEE_ENGINE_BUILD).toBe('off');
  });
});

describe('on battery', () => {
  it('is a battery discharging in the power supply class, and false where there is none', () => {
    const sys = home();
    const supply = (name: string, type: string, status: string): void => {
      mkdirSync(join(sys, name));
      writeFileSync(join(sys, name, 'type'), `${type}\n`);
      writeFileSync(join(sys, name, 'status'), `${status}\n`);
    };
    supply('AC', 'Mains', 'Unknown');
    supply('BAT0', 'Battery', 'Charging');
    expect(onBattery(sys)).toBe(false);
    writeFileSync(join(sys, 'BAT0', 'status'), 'Discharging\n');
    expect(onBattery(sys)).toBe(true);
    expect(onBattery(join(sys, 'none'))).toBe(false);
  });
});

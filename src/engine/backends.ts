/**
 * Which llama.cpp backends this machine can run, with their build: read from the installed
 * node-llama-cpp binary packages (no llama.cpp start needed) and the device probe.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { arch, platform } from 'node:os';
import { dirname, join } from 'node:path';
import type { Backend, DeviceInfo } from './types.js';

export interface BackendInfo {
  name: Backend;
  /** A device for it was found and its binary is installed. */
  available: boolean;
  /** The prebuilt binary package, when installed. */
  binary: { package: string; version: string } | undefined;
  devices: string[];
  build: { engine: string; engineVersion: string; llamaCppRepo: string; llamaCppTag: string };
}

const require = createRequire(import.meta.url);

/** The installed package's root folder; found from its entry point, since `exports` may hide package.json. */
export function packageRoot(name: string): string | undefined {
  let dir: string;
  try {
    dir = dirname(require.resolve(name));
  } catch {
    return undefined;
  }
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (
      existsSync(manifest) &&
      (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name === name
    ) {
      return dir;
    }
    const parent = dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

function packageVersion(name: string): string | undefined {
  const root = packageRoot(name);
  return root === undefined
    ? undefined
    : (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;
}

function binaryPackage(backend: Backend): string {
  const base = `@node-llama-cpp/${platform() === 'win32' ? 'win' : platform() === 'darwin' ? 'mac' : platform()}-${arch()}`;
  if (backend === 'cpu') return base;
  return `${base}-${backend}`;
}

export function describeBackends(devices: DeviceInfo): BackendInfo[] {
  let llamaCpp = { llamaCppGithubRepo: 'unknown', tag: 'unknown' };
  const engineRoot = packageRoot('node-llama-cpp');
  const info = engineRoot === undefined ? undefined : join(engineRoot, 'llama', 'llama.cpp.info.json');
  if (info !== undefined && existsSync(info))
    llamaCpp = JSON.parse(readFileSync(info, 'utf8')) as typeof llamaCpp;
  const build = {
    engine: 'node-llama-cpp',
    engineVersion: packageVersion('node-llama-cpp') ?? 'unknown',
    llamaCppRepo: llamaCpp.llamaCppGithubRepo,
    llamaCppTag: llamaCpp.tag,
  };
  const backends: Backend[] = platform() === 'darwin' ? ['cpu', 'metal'] : ['cpu', 'cuda', 'vulkan'];
  return backends.map((name) => {
    const pkg = name === 'metal' ? `@node-llama-cpp/mac-${arch()}-metal` : binaryPackage(name);
    const version = packageVersion(pkg);
    return {
      name,
      available:
        devices.backends.includes(name) && (name === 'cpu' || version !== undefined || name === 'metal'),
      binary: version === undefined ? undefined : { package: pkg, version },
      devices:
        name === 'cpu'
          ? [devices.cpu.model]
          : devices.gpus.filter((g) => g.backend === name).map((g) => g.name),
      build,
    };
  });
}

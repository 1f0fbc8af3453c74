/**
 * A llama.cpp binary built on this machine for its CPU (`GGML_NATIVE`), beside node-llama-cpp's
 * prebuilt one. node-llama-cpp builds it offline from the llama.cpp source it bundles (its git
 * release bundle) into its own `llama/localBuilds/`, the only place it loads local builds from; the
 * build is asked for with one custom CMake option so that it gets a folder of its own
 * (`linux-x64-<hash>`), which only a worker asking for exactly that option loads: a worker that
 * asks for none still gets the prebuilt binary. A fresh `npm install` drops the folder; `rbee
 * doctor` then says so and workers use the prebuilt binary.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { constants, setPriority } from 'node:os';
import { join } from 'node:path';
import { RbeeError } from '../shared/errors.js';
import { packageRoot } from './backends.js';

/**
 * The CMake option that names the native build's folder. It is also llama.cpp's default when
 * building for the machine it builds on, so it changes the folder, not the binary.
 */
export const NATIVE_CMAKE_OPTIONS: Readonly<Record<string, string>> = { GGML_NATIVE: 'ON' };

export interface NativeBuild {
  /** Its folder under node-llama-cpp's `llama/localBuilds/`. */
  folder: string;
  /** The llama.cpp release it was built from (node-llama-cpp's bundled one). */
  release: string;
  /** When it finished (the folder's completion marker), ms since the epoch. */
  builtAt: number;
}

/** node-llama-cpp's local builds folder; undefined when node-llama-cpp is not installed. */
export function localBuildsDir(): string | undefined {
  const root = packageRoot('node-llama-cpp');
  return root === undefined ? undefined : join(root, 'llama', 'localBuilds');
}

interface BuildMetadata {
  buildOptions?: {
    gpu?: unknown;
    customCmakeOptions?: Record<string, unknown>;
    llamaCpp?: { release?: unknown };
  };
}

/**
 * The finished native CPU build, if there is one: a folder whose metadata says CPU only, built with
 * exactly NATIVE_CMAKE_OPTIONS, with the completion marker node-llama-cpp writes last (a build cut
 * short has none, and node-llama-cpp would not load it either).
 */
export function findNativeBuild(dir: string | undefined = localBuildsDir()): NativeBuild | undefined {
  if (dir === undefined || !existsSync(dir)) return undefined;
  const wanted = Object.entries(NATIVE_CMAKE_OPTIONS);
  for (const folder of readdirSync(dir)) {
    const done = join(dir, folder, 'buildDone.status');
    const metadataPath = join(dir, folder, 'Release', '_nlcBuildMetadata.json');
    if (
      !existsSync(done) ||
      !existsSync(metadataPath) ||
      !existsSync(join(dir, folder, 'Release', 'llama-addon.node'))
    )
      continue;
    let metadata: BuildMetadata;
    try {
      metadata = JSON.parse(readFileSync(metadataPath, 'utf8')) as BuildMetadata;
    } catch {
      continue;
    }
    const options = metadata.buildOptions;
    const custom = options?.customCmakeOptions ?? {};
    if (options?.gpu !== false) continue;
    if (Object.keys(custom).length !== wanted.length) continue;
    if (!wanted.every(([key, value]) => custom[key] === value)) continue;
    const release = options.llamaCpp?.release;
    return {
      folder,
      release: typeof release === 'string' ? release : 'unknown',
      builtAt: statSync(done).mtimeMs,
    };
  }
  return undefined;
}

/**
 * The llama.cpp release node-llama-cpp bundles (its release info beside the source), which a native
 * build made now would be built from; undefined when node-llama-cpp or the file is missing.
 */
export function bundledLlamaCppRelease(): string | undefined {
  const root = packageRoot('node-llama-cpp');
  if (root === undefined) return undefined;
  try {
    const info = JSON.parse(readFileSync(join(root, 'llama', 'llama.cpp.info.json'), 'utf8')) as {
      tag?: unknown;
    };
    return typeof info.tag === 'string' ? info.tag : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Test hook: a child process that acts as the build (progress lines like a compiler's, a folder it
 * fills, the completion marker last) for `ms`, in `dir` instead of node-llama-cpp's local builds,
 * so that tests drive the real progress, cancel and clean-up paths without compiling anything.
 */
export interface TestBuild {
  dir: string;
  ms: number;
  release: string;
  /** Exits with an error at the end instead, leaving its folder unfinished. */
  fails?: boolean;
}

const TEST_BUILD_SCRIPT = `
const fs = require('node:fs');
const path = require('node:path');
const [dir, ms, release, fails] = process.argv.slice(1);
const folder = path.join(dir, 'test-native-build');
fs.mkdirSync(path.join(folder, 'Release'), { recursive: true });
fs.writeFileSync(path.join(folder, 'pid'), String(process.pid));
console.log('Compiling llama.cpp');
let step = 0;
const timer = setInterval(() => {
  step += 1;
  console.log('[' + String(step * 10).padStart(3) + '%] Building CXX object ggml/src/ggml-cpu.cpp.o');
  if (step < 10) return;
  clearInterval(timer);
  if (fails === 'fail') {
    console.error('error: the compiler ran out of memory');
    process.exit(1);
  }
  fs.writeFileSync(path.join(folder, 'Release', 'llama-addon.node'), '');
  fs.writeFileSync(path.join(folder, 'Release', '_nlcBuildMetadata.json'), JSON.stringify({
    buildOptions: { gpu: false, customCmakeOptions: { GGML_NATIVE: 'ON' }, llamaCpp: { release } },
  }));
  fs.writeFileSync(path.join(folder, 'buildDone.status'), '');
  console.log('Done');
}, Number(ms) / 10);
`;

export interface BuildProgress {
  /** One line for a person: a step, or how far the compilation is. */
  text: string;
  /** The compilation's share done, 0–100, when its output says. */
  percent?: number;
}

/** `[ 45%] Building …` (make) or `[123/456] Building …` (ninja): how far the compilation is. */
export function compilePercent(line: string): number | undefined {
  const make = /^\[\s*(\d{1,3})%\]/.exec(line);
  if (make !== null) return Number(make[1]);
  const ninja = /^\[(\d+)\/(\d+)\]/.exec(line);
  if (ninja !== null && Number(ninja[2]) > 0) return Math.floor((100 * Number(ninja[1])) / Number(ninja[2]));
  return undefined;
}

const stripAnsi = (text: string): string => text.replace(/\u001b\[[0-9;?]*[A-Za-z]/g, '');

/**
 * Builds the native CPU binary with node-llama-cpp's own `source download` (its bundled llama.cpp,
 * offline; minutes on an idle machine, much longer on a loaded one), narrating steps and the
 * compilation's progress. Aborting `signal` kills the build (its whole process group) and removes
 * what it left half-built; so does a failure. Resolves with the finished build.
 */
export async function buildNative(
  options: {
    onProgress?: (progress: BuildProgress) => void;
    signal?: AbortSignal;
    /** Run the build at the lowest CPU priority, so that everything else on the machine goes first. */
    nice?: boolean;
    test?: TestBuild;
  } = {},
): Promise<NativeBuild> {
  options.signal?.throwIfAborted();
  const root = packageRoot('node-llama-cpp');
  const dir = options.test?.dir ?? localBuildsDir();
  if (root === undefined || dir === undefined) {
    throw new RbeeError('ENGINE_BUILD_FAILED', 'node-llama-cpp is not installed: `npm install` first');
  }
  const startedAt = Date.now();
  const infoPath = join(root, 'llama', 'llama.cpp.info.json');
  const info =
    options.test === undefined && existsSync(infoPath) ? readFileSync(infoPath, 'utf8') : undefined;
  const say = (progress: BuildProgress): void => options.onProgress?.(progress);
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' };
  for (const [key, value] of Object.entries(NATIVE_CMAKE_OPTIONS))
    env[`NODE_LLAMA_CPP_CMAKE_OPTION_${key}`] = value;
  say({ text: "building llama.cpp for this CPU from node-llama-cpp's bundled source (offline)" });
  if (options.test !== undefined) mkdirSync(dir, { recursive: true });
  const args =
    options.test === undefined
      ? [join(root, 'dist', 'cli', 'cli.js'), 'source', 'download', '--gpu', 'false', '--noUsageExample']
      : [
          '-e',
          TEST_BUILD_SCRIPT,
          dir,
          String(options.test.ms),
          options.test.release,
          options.test.fails === true ? 'fail' : 'succeed',
        ];
  const child = spawn(
    process.execPath,
    args,
    // its own process group: cmake, the compiler and their children go with it on a cancel
    { cwd: options.test === undefined ? root : dir, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true },
  );
  if (options.nice === true && child.pid !== undefined) {
    // set before it starts cmake (Node takes a while to start): every compiler it runs inherits it
    try {
      setPriority(child.pid, constants.priority.PRIORITY_LOW);
    } catch {
      // not allowed here: the build runs at the normal priority
    }
  }
  let tail = '';
  let lastPercent = -1;
  let lastSaidAt = 0;
  let lastStep = '';
  const onLine = (raw: string): void => {
    const line = stripAnsi(raw).trim();
    if (line === '') return;
    tail = `${tail}\n${line}`.slice(-4000);
    const percent = compilePercent(line);
    const now = Date.now();
    if (percent === undefined) {
      // node-llama-cpp's own steps (cloning, compiling, done), not the compiler's chatter; a step
      // that redraws its percentage is said when it starts and then every 15 s
      if (!/^(Repo|Release|Cloning|Cloned|Compil|Removed|Done|Failed)/i.test(line)) return;
      const step = line.replace(/\s+\d+%.*$/, '');
      if (step === lastStep && now - lastSaidAt < 15_000) return;
      lastStep = step;
      lastSaidAt = now;
      say({ text: line.replace(/\s{2,}/g, ' ') });
      return;
    }
    if (percent >= lastPercent + 5 || now - lastSaidAt >= 15_000) {
      lastPercent = percent;
      lastSaidAt = now;
      say({ text: `compiling llama.cpp: ${percent}%`, percent });
    }
  };
  for (const stream of [child.stdout, child.stderr]) {
    let buffered = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      const lines = (buffered + chunk).split(/\r?\n|\r/);
      buffered = lines.pop() ?? '';
      lines.forEach(onLine);
    });
  }
  const killGroup = (signal: NodeJS.Signals): void => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, signal);
    } catch {
      // already gone
    }
  };
  let hardKill: NodeJS.Timeout | undefined;
  const onAbort = (): void => {
    killGroup('SIGTERM');
    hardKill = setTimeout(() => killGroup('SIGKILL'), 3000);
  };
  options.signal?.addEventListener('abort', onAbort, { once: true });
  const exit = await new Promise<{ code: number | null; error?: Error }>((resolve) => {
    child.once('error', (error) => resolve({ code: null, error }));
    child.once('close', (code) => resolve({ code }));
  });
  options.signal?.removeEventListener('abort', onAbort);
  clearTimeout(hardKill);
  // whatever the end, nothing else of the group outlives the build
  killGroup('SIGKILL');
  const build = exit.code === 0 ? findNativeBuild(dir) : undefined;
  if (build !== undefined) return build;
  cleanUpAfter(dir, startedAt);
  // `source download` removes and rewrites the release info beside the source; put it back if cut short
  if (info !== undefined && !existsSync(infoPath)) writeFileSync(infoPath, info);
  if (options.signal?.aborted === true) {
    throw new RbeeError('JOB_CANCELLED', 'the native build was cancelled; nothing of it was kept');
  }
  const why = exit.error?.message ?? `exit code ${String(exit.code)}`;
  throw new RbeeError(
    'ENGINE_BUILD_FAILED',
    `the native llama.cpp build failed (${why}); workers keep the prebuilt binary. Its last output:${tail.slice(-1500)}`,
  );
}

/** Removes the folders and lock files a build started at `since` left without its completion marker. */
function cleanUpAfter(dir: string, since: number): void {
  if (!existsSync(dir)) return;
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    let changedAt: number;
    try {
      changedAt = statSync(path).mtimeMs;
    } catch {
      continue;
    }
    if (changedAt < since - 1000) continue;
    if (name.endsWith('.lock') || !existsSync(join(path, 'buildDone.status'))) {
      rmSync(path, { recursive: true, force: true });
    }
  }
}

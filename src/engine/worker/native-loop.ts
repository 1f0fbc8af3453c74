/**
 * rbee's native token loop (native/token-loop.cc): decode, sample, repeat on a thread of its own,
 * each token handed to JavaScript as it comes, so that the token loop's JavaScript (detokenizing,
 * stop strings, the write to the hive) runs beside the next decode instead of between two.
 *
 * It is compiled on the machine that runs it, with the C++ compiler there, when a worker first
 * asks for it (`prepareNativeLoop`), into a cache folder shared by every worker and data folder
 * (`$RBEE_NATIVE_CACHE`, else `$XDG_CACHE_HOME/rbee/native`, else `~/.cache/rbee/native`), under a
 * name that changes with its source, Node's ABI and node-addon-api's version: nothing is built at
 * install time. Until it is there, and on a machine that cannot build or load it (no compiler, no
 * Node headers, not Linux, `RBEE_NATIVE_LOOP=off`), the token loop steps in JavaScript as before;
 * why is logged once.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { packageRoot } from '../backends.js';

/** What the addon exports. */
export interface NativeLoopAddon {
  /** Undefined when start() can run on this node-llama-cpp context (AddonContext), else why not. */
  check(addonContext: object, contextSize: number, batchSize: number): string | undefined;
  /** A running loop, or why it could not start (then nothing ran). */
  start(
    addonContext: object,
    options: NativeLoopOptions,
    /** Tokens sampled since the last call, in order (-1: none could be sampled); true to stop. */
    onTokens: (tokens: Int32Array) => boolean,
    /** Once, when the thread is done with the context: the cache holds the sequence up to `position`. */
    onEnd: (reason: NativeLoopEnd, position: number, error: string | undefined) => void,
  ): { stop(): void } | string;
}

export interface NativeLoopOptions {
  contextSize: number;
  batchSize: number;
  sequenceId: number;
  /** Where the tokens to evaluate go in the sequence (what its cache holds before them). */
  position: number;
  /** The tokens to evaluate before the first sample (at least one). */
  prompt: Uint32Array;
  /** Tokens after which the loop samples no more (besides end-of-generation tokens). */
  stopTokens: Uint32Array;
  maxTokens: number;
  /** How many tokens the thread may get ahead of JavaScript. */
  window: number;
  temperature: number;
  minP: number;
  topK: number;
  topP: number;
  seed: number;
  biasKeys?: Uint32Array;
  biasValues?: Float32Array;
}

/**
 * token: it sampled a stop or end-of-generation token (or none); maxTokens; contextFull: the next
 * token would not fit; stopped: JavaScript told it to stop; error.
 */
export type NativeLoopEnd = 'token' | 'maxTokens' | 'contextFull' | 'stopped' | 'error';

type State =
  | { kind: 'none' }
  | { kind: 'building'; ready: Promise<void> }
  | { kind: 'loaded'; addon: NativeLoopAddon }
  | { kind: 'unavailable'; why: string };

let state: State = { kind: 'none' };
let enabled = true;
let logger: (text: string) => void = () => undefined;
let logged = false;

/** The addon, once loaded; undefined before (or when it cannot be, or is switched off). */
export function nativeLoopAddon(): NativeLoopAddon | undefined {
  return enabled && state.kind === 'loaded' ? state.addon : undefined;
}

/** Off: the token loop steps in JavaScript even where the addon is loaded (tests compare both). */
export function useNativeLoop(on: boolean): void {
  enabled = on;
}

/** Why the native loop does not serve (once per process, to the worker's log). */
export function nativeLoopUnavailable(why: string): void {
  if (logged) return;
  logged = true;
  logger(`the token loop steps in JavaScript: ${why}`);
}

export interface PrepareOptions {
  log?: (text: string) => void;
  env?: NodeJS.ProcessEnv;
  /** The compiler; default `$CXX`, else g++. */
  compiler?: string;
}

/**
 * Loads the native loop, building it first when its cache has no build of this source; resolves
 * once it is loaded or known unavailable (never rejects). A worker calls it without waiting: the
 * token loop uses the addon from the moment it is there.
 */
export function prepareNativeLoop(options: PrepareOptions = {}): Promise<void> {
  if (options.log !== undefined) logger = options.log;
  if (state.kind === 'building') return state.ready;
  if (state.kind !== 'none') return Promise.resolve();
  const ready = buildNativeLoop(options).then(
    (addon) => {
      state = { kind: 'loaded', addon };
    },
    (error: unknown) => {
      const why = error instanceof Error ? error.message : String(error);
      state = { kind: 'unavailable', why };
      nativeLoopUnavailable(why);
    },
  );
  state = { kind: 'building', ready };
  return ready;
}

/** The C++ source: beside the compiled JavaScript's folder tree, in src/ (shipped with the package). */
export function nativeLoopSource(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  // src/engine/worker (tsx, vitest) or dist/engine/worker (built): the package root is 3 up
  return join(here, '..', '..', '..', 'src', 'engine', 'worker', 'native', 'token-loop.cc');
}

/**
 * Builds the addon unless its cache has this build, and loads it: rejects with why it cannot. What
 * prepareNativeLoop does, without its memory of an earlier answer.
 */
export async function buildNativeLoop(options: PrepareOptions = {}): Promise<NativeLoopAddon> {
  const env = options.env ?? process.env;
  if (env.RBEE_NATIVE_LOOP === 'off') throw new Error('RBEE_NATIVE_LOOP=off');
  if (process.platform !== 'linux') throw new Error(`not built on ${process.platform}`);
  const source = nativeLoopSource();
  if (!existsSync(source)) throw new Error(`its source is missing (${source})`);
  const addonApi = nodeAddonApiDir();
  if (addonApi === undefined) throw new Error('node-addon-api is not installed');
  const headers = nodeHeadersDir();
  if (headers === undefined) throw new Error("Node's headers (node_api.h) are not installed");
  const key = createHash('sha256')
    .update(readFileSync(source))
    .update(process.versions.modules)
    .update(readFileSync(join(addonApi, 'package.json')))
    .digest('hex')
    .slice(0, 16);
  const dir = cacheDir(env);
  const target = join(dir, `token-loop-${key}.node`);
  if (!existsSync(target)) {
    const compiler = options.compiler ?? env.CXX ?? 'g++';
    // a compiler that failed on this source fails every worker the same way: once is enough
    const failed = join(dir, `token-loop-${key}.failed`);
    const earlier = earlierFailure(failed, compiler);
    if (earlier !== undefined) throw new Error(`${earlier} (earlier; remove ${failed} to try again)`);
    mkdirSync(dir, { recursive: true });
    // built under a name of its own, then renamed: workers building at once never load half a file
    const partial = `${target}.${process.pid}.partial`;
    try {
      await compile(compiler, source, partial, [headers, addonApi]);
      renameSync(partial, target);
    } catch (error) {
      if (error instanceof CompileError)
        writeFileSync(failed, JSON.stringify({ compiler, error: error.message }));
      throw error;
    } finally {
      rmSync(partial, { force: true });
    }
    pruneOtherBuilds(dir, target);
  }
  const addon = createRequire(import.meta.url)(target) as NativeLoopAddon;
  if (typeof addon.check !== 'function' || typeof addon.start !== 'function') {
    throw new Error(`${target} is not the native token loop`);
  }
  return addon;
}

/** Builds of other sources kept beside this one: other rbee installs sharing the cache use them. */
const OTHER_BUILDS_KEPT = 3;

/**
 * Builds (and failures) of other sources go, but for the newest few: an older rbee's go in time,
 * and two installs that share the cache do not delete each other's build at every start. A
 * process that has a removed build loaded keeps its mapping.
 */
function pruneOtherBuilds(dir: string, target: string): void {
  const others = readdirSync(dir)
    .filter((name) => /^token-loop-[0-9a-f]{16}\.(node|failed)$/.test(name) && join(dir, name) !== target)
    .map((name) => {
      try {
        return { path: join(dir, name), at: statSync(join(dir, name)).mtimeMs };
      } catch {
        return undefined; // removed meanwhile
      }
    })
    .filter((entry) => entry !== undefined)
    .sort((a, b) => b.at - a.at);
  for (const { path } of others.slice(OTHER_BUILDS_KEPT)) rmSync(path, { force: true });
}

/** What the same compiler said when it failed on this source before, if it did. */
function earlierFailure(file: string, compiler: string): string | undefined {
  try {
    const recorded = JSON.parse(readFileSync(file, 'utf8')) as { compiler?: unknown; error?: unknown };
    return recorded.compiler === compiler && typeof recorded.error === 'string' ? recorded.error : undefined;
  } catch {
    return undefined;
  }
}

/** The compiler ran and failed (not: it is not installed). */
class CompileError extends Error {}

function cacheDir(env: NodeJS.ProcessEnv): string {
  if (env.RBEE_NATIVE_CACHE !== undefined && env.RBEE_NATIVE_CACHE !== '') return env.RBEE_NATIVE_CACHE;
  const xdg = env.XDG_CACHE_HOME;
  return join(xdg !== undefined && xdg !== '' ? xdg : join(homedir(), '.cache'), 'rbee', 'native');
}

/** node-addon-api's folder: node-llama-cpp's dependency (the headers its own addon was built with). */
function nodeAddonApiDir(): string | undefined {
  const root = packageRoot('node-llama-cpp');
  if (root === undefined) return undefined;
  try {
    return dirname(createRequire(join(root, 'package.json')).resolve('node-addon-api/package.json'));
  } catch {
    return undefined;
  }
}

/** Where this Node's headers are: its own install's include/node, or a system package's. */
function nodeHeadersDir(): string | undefined {
  const candidates = [
    join(dirname(process.execPath), '..', 'include', 'node'),
    '/usr/include/node',
    '/usr/local/include/node',
    join(homedir(), '.cache', 'node-gyp', process.versions.node, 'include', 'node'),
  ];
  return candidates.find((dir) => existsSync(join(dir, 'node_api.h')));
}

/** Compiles at low priority (a worker is starting or serving beside it). */
function compile(compiler: string, source: string, out: string, includes: string[]): Promise<void> {
  const args = [
    '-std=c++17',
    '-shared',
    '-fPIC',
    '-O2',
    '-DNAPI_VERSION=7',
    '-DNODE_ADDON_API_DISABLE_CPP_EXCEPTIONS',
    ...includes.map((dir) => `-I${dir}`),
    '-o',
    out,
    source,
  ];
  return new Promise((resolve, reject) => {
    let stderr = '';
    let child;
    try {
      child = spawn('nice', ['-n', '10', compiler, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (error) {
      reject(error instanceof Error ? error : new Error(String(error)));
      return;
    }
    child.stderr.on('data', (chunk: Buffer) => {
      if (stderr.length < 4000) stderr += chunk.toString();
    });
    child.on('error', (error) => reject(new Error(`${compiler} could not run: ${error.message}`)));
    child.on('close', (code) => {
      if (code === 0) resolve();
      // nice's answer for a command it cannot find or run: nothing to remember
      else if (code === 127 || code === 126) reject(new Error(`${compiler} could not run (not installed?)`));
      else
        reject(
          new CompileError(
            `${compiler} failed (exit ${String(code)})${stderr === '' ? '' : `: ${stderr.trim().split('\n').slice(0, 3).join(' / ')}`}`,
          ),
        );
    });
  });
}

/**
 * `npm run bench:limit`: how close rbee's engine comes to what llama.cpp itself does on this CPU.
 *
 * The limit is `llama-bench`'s generation speed, built once from the very llama.cpp source that
 * node-llama-cpp ships (its bundled git release, offline) with `-DGGML_NATIVE=ON`, and cached in
 * `.cache/llama-bench/` keyed by that release (see ensureLlamaBench). Then, in one run, on the tiny
 * and the small generated model, with the same threads (1 by default), interleaved round by round
 * (limit, a, b, c, limit, …) so that machine noise falls on all alike; medians:
 *
 *   (limit) llama-bench `-p 0 -n N`: generation alone, no sampling, no prompt
 *   (a) node-llama-cpp in a process of its own, with the binary rbee's workers load
 *   (b) an rbee worker process through the hive's local path
 *   (c) the full path: a real `rbee node`, `POST /v1/jobs` and its SSE events
 *
 * (a)–(c) generate greedily after a short prompt and are timed as bench:engine times them (see
 * bench-paths.ts). Ratios are only comparable within one run: the machine's speed drifts.
 *
 * (a)–(c) run the binary this machine's CPU workers load: the native build where `rbee doctor --fix`
 * chose it (its decision in the data directory, RBEE_HOME), else the prebuilt one.
 *
 * Env: BENCH_REPEATS (default 5), BENCH_PRESETS (tiny,small), BENCH_TOKENS (per preset: 512 tiny,
 *      128 small), BENCH_THREADS (default 1), BENCH_BINARY (native or prebuilt, over that choice),
 *      BENCH_FLASH_ATTENTION=1 (every path, llama-bench too, with flash attention).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import {
  createFloorProcess,
  createNode,
  createWorkerPath,
  ensureModel,
  median,
  REPO,
  type Preset,
  type Run,
  benchSettings,
  benchBinary,
  FLASH_ATTENTION,
  type BenchBinary,
} from './bench-paths.js';

const { repeats: REPEATS, presets: PRESETS, tokensFor, threads: THREADS } = benchSettings(1);

const LLAMA_DIR = join(REPO, 'node_modules', 'node-llama-cpp', 'llama');
const CACHE = join(REPO, '.cache', 'llama-bench');

/** The bundled llama.cpp release: its tag and the bundle's commit (a re-bundled tag is a new key). */
function bundledRelease(): { key: string; tag: string; commit: string } {
  const info = JSON.parse(readFileSync(join(LLAMA_DIR, 'llama.cpp.info.json'), 'utf8')) as { tag: string };
  const heads = execFileSync('git', ['bundle', 'list-heads', join(LLAMA_DIR, 'gitRelease.bundle')], {
    encoding: 'utf8',
  });
  const commit = heads.split(/\s/)[0] ?? 'unknown';
  return { key: `${info.tag}-${commit.slice(0, 8)}`, tag: info.tag, commit };
}

/**
 * `llama-bench` from node-llama-cpp's bundled source, built for this CPU: cached, else built now
 * (offline; minutes). A failed build leaves nothing behind that would pass for a cached one.
 */
function ensureLlamaBench(): { path: string; release: string } {
  const { key, commit } = bundledRelease();
  const source = join(CACHE, `src-${key}`);
  const binary = join(source, 'build', 'bin', 'llama-bench');
  if (existsSync(binary)) return { path: binary, release: key };
  mkdirSync(CACHE, { recursive: true });
  const run = (command: string, args: string[], cwd?: string): void => {
    execFileSync(command, args, { cwd, stdio: ['ignore', 'inherit', 'inherit'] });
  };
  if (!existsSync(join(source, 'CMakeLists.txt'))) {
    console.error(`llama-bench: cloning llama.cpp ${key} from node-llama-cpp's bundle…`);
    const partial = `${source}.partial`;
    rmSync(partial, { recursive: true, force: true });
    run('git', ['clone', '--quiet', join(LLAMA_DIR, 'gitRelease.bundle'), partial]);
    run('git', ['-c', 'advice.detachedHead=false', 'checkout', '--quiet', commit], partial);
    renameSync(partial, source);
  }
  console.error('llama-bench: building for this CPU (GGML_NATIVE, once; several minutes)…');
  run(
    'cmake',
    [
      '-S',
      '.',
      '-B',
      'build',
      '-G',
      'Ninja',
      '-DCMAKE_BUILD_TYPE=Release',
      '-DGGML_NATIVE=ON',
      '-DLLAMA_BUILD_SERVER=OFF',
      '-DLLAMA_USE_PREBUILT_UI=OFF',
      '-DLLAMA_CURL=OFF',
      '-DLLAMA_OPENSSL=OFF',
      '-DLLAMA_BUILD_TESTS=OFF',
      '-DLLAMA_BUILD_EXAMPLES=OFF',
    ],
    source,
  );
  run('ninja', ['-C', 'build', 'llama-bench'], source);
  if (!existsSync(binary)) throw new Error(`llama-bench: the build did not produce ${binary}`);
  return { path: binary, release: key };
}

/** llama-bench's generation speed for `tokens` tokens, one repetition (its own warm-up first). */
function llamaBenchTokS(binary: string, modelPath: string, tokens: number): number {
  const out = execFileSync(
    binary,
    [
      '-m',
      modelPath,
      '-t',
      String(THREADS),
      '-p',
      '0',
      '-n',
      String(tokens),
      '-r',
      '1',
      '-fa',
      FLASH_ATTENTION ? '1' : '0',
      '-o',
      'json',
    ],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] },
  );
  const rows = JSON.parse(out) as { avg_ts: number; n_gen: number }[];
  const row = rows.find((r) => r.n_gen === tokens);
  if (row === undefined) throw new Error(`llama-bench: no generation row in ${out}`);
  return row.avg_ts;
}

/** CPU features that decide which kernels llama.cpp uses (from /proc/cpuinfo). */
function cpuFlags(): string {
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('flags'));
    const flags = (line?.split(':')[1] ?? '').trim().split(/\s+/);
    const relevant = /^(sse4_2|avx|avx2|fma|f16c|avx512.*|avx_vnni|amx.*|sve|neon|asimd.*)$/;
    return flags.filter((f) => relevant.test(f)).join(' ') || 'unknown';
  } catch {
    return 'unknown';
  }
}

const genTokS = (run: Run): number =>
  run.tokens > 1 ? ((run.tokens - 1) * 1000) / (run.last - run.first) : 0;
const fmt = (n: number, digits = 1): string => n.toFixed(digits);

const VARIANTS = ['limit', 'a', 'b', 'c'] as const;
type Variant = (typeof VARIANTS)[number];
const LABELS: Record<Variant, string> = {
  limit: 'llama.cpp `llama-bench`, native build (the limit)',
  a: '(a) node-llama-cpp, a process of its own',
  b: '(b) rbee worker (IPC)',
  c: '(c) rbee node, /v1/jobs + SSE',
};

async function benchPreset(
  preset: Preset,
  llamaBench: string,
  binary: BenchBinary,
): Promise<Record<Variant, number>> {
  const tokens = tokensFor(preset);
  const modelPath = await ensureModel(preset);
  const floor = await createFloorProcess(modelPath, tokens, THREADS, binary.binary);
  const worker = await createWorkerPath(modelPath, tokens, THREADS, 1, binary);
  const node = await createNode(modelPath, tokens, THREADS, binary);
  const runs: Record<Variant, () => Promise<number>> = {
    limit: () => Promise.resolve(llamaBenchTokS(llamaBench, modelPath, tokens)),
    a: async () => genTokS(await floor.run()),
    b: async () => genTokS(await worker.run()),
    c: async () => genTokS(await node.jobs()),
  };
  const samples: Record<Variant, number[]> = { limit: [], a: [], b: [], c: [] };
  try {
    for (const v of VARIANTS) await runs[v](); // warm-up: loads, caches, JIT
    for (let r = 0; r < REPEATS; r++) {
      for (const v of VARIANTS) samples[v].push(await runs[v]());
    }
  } finally {
    await worker.worker.stop();
    await node.dispose();
    await floor.dispose();
  }
  const result = {} as Record<Variant, number>;
  for (const v of VARIANTS) result[v] = median(samples[v]);
  console.log(`\n${preset}, tok/s by round:`);
  for (const v of VARIANTS) console.log(`  ${v}: ${samples[v].map((x) => fmt(x)).join(', ')}`);
  console.log(`\n## ${preset} model, ${tokens} tokens\n`);
  console.log('| path | generation tok/s | of the limit | of (a) | µs per token over the limit |');
  console.log('|---|---|---|---|---|');
  for (const v of VARIANTS) {
    const over = 1e6 / result[v] - 1e6 / result.limit;
    console.log(
      `| ${LABELS[v]} | ${fmt(result[v])} | ${fmt(result[v] / result.limit, 3)} | ` +
        `${fmt(result[v] / result.a, 3)} | ${v === 'limit' ? '—' : fmt(over)} |`,
    );
  }
  return result;
}

async function main(): Promise<void> {
  const llamaBench = ensureLlamaBench();
  const binary = benchBinary();
  console.log(
    `# bench:limit — ${PRESETS.join(' and ')}, ${THREADS} thread(s), ${REPEATS} repeats, ` +
      `${cpus()[0]?.model ?? 'cpu'} ×${cpus().length}, ${Math.round(totalmem() / 2 ** 30)} GiB, node ${process.version}`,
  );
  console.log(
    `\nllama.cpp ${llamaBench.release} (node-llama-cpp's bundled source), CPU flags: ${cpuFlags()}`,
  );
  console.log(`(a)–(c) run the ${binary.binary} binary: ${binary.why}`);
  console.log(`flash attention ${FLASH_ATTENTION ? 'on' : 'off'} on every path (BENCH_FLASH_ATTENTION)`);
  const ratios: string[] = [];
  for (const preset of PRESETS) {
    const r = await benchPreset(preset, llamaBench.path, binary);
    ratios.push(`${preset} c/limit ${fmt(r.c / r.limit, 3)} (a/limit ${fmt(r.a / r.limit, 3)})`);
  }
  console.log(`\n${ratios.join('; ')}; targets: c/limit ≥ 0.95 (small), ≥ 0.80 (tiny)`);
}

await main();

/**
 * `npm run bench:native`: the native llama.cpp build (`rbee doctor --fix` builds it) against the
 * prebuilt binary, on the tiny and the small generated model, exactly as the fix measures (two real
 * workers, interleaved rounds, medians of the paired ratios); then the threads re-check on the
 * native build, which uses OpenMP: the same binary at 1 thread against 2, interleaved. Needs the
 * native build (run `rbee doctor --fix` first, or this script builds it: minutes).
 *
 * Env: BENCH_REPEATS (rounds, default 5), BENCH_PRESETS (tiny,small), BENCH_THREADS (default 1),
 *      BENCH_TOKENS (per generation; default 512 tiny, 128 small), BENCH_PARTS (binaries,threads).
 */
import { cpus, loadavg } from 'node:os';
import { engine, ensureModel } from './bench-paths.js';

type Preset = 'tiny' | 'small';
const ROUNDS = Number(process.env.BENCH_REPEATS ?? 5);
const PRESETS = (process.env.BENCH_PRESETS ?? 'tiny,small').split(',') as Preset[];
const THREADS = Number(process.env.BENCH_THREADS ?? 1);
const TOKENS: Record<Preset, number> = {
  tiny: Number(process.env.BENCH_TOKENS ?? 512),
  small: Number(process.env.BENCH_TOKENS ?? 128),
};
const PARTS = (process.env.BENCH_PARTS ?? 'binaries,threads').split(',');

const fmt = (n: number, digits = 1): string => n.toFixed(digits);
const load = (): string => fmt(loadavg()[0] ?? 0, 2);
const say = (text: string): void => void process.stderr.write(`${text}\n`);

let build = engine.findNativeBuild();
if (build === undefined) {
  say('no native build yet: building it (minutes)…');
  build = await engine.buildNative({ onProgress: (p) => say(p.text) });
}
console.log(
  `native build ${build.release} (${build.folder}); CPU ${cpus()[0]?.model ?? '?'}; load ${load()}`,
);

if (PARTS.includes('binaries')) {
  console.log(
    '\n| model, tokens | native tok/s (rounds) | prebuilt tok/s (rounds) | native ÷ prebuilt (median of paired) | load before → after |',
  );
  console.log('| --- | --- | --- | --- | --- |');
  const measurements = [];
  for (const preset of PRESETS) {
    const modelPath = await ensureModel(preset);
    const m = await engine.measureBinaries({
      modelPath,
      preset,
      tokens: TOKENS[preset],
      rounds: ROUNDS,
      threads: THREADS,
      onProgress: say,
    });
    measurements.push(m);
    console.log(
      `| ${preset}, ${m.tokens} | ${m.nativeTokS.map((t) => fmt(t)).join(', ')} | ` +
        `${m.prebuiltTokS.map((t) => fmt(t)).join(', ')} | ${fmt(m.ratio, 3)} | ${(m.load ?? []).map((l) => fmt(l, 2)).join(' → ')} |`,
    );
  }
  const decision = engine.decide(build, measurements);
  console.log(`\ndecision: ${decision.choice} (${decision.why})`);
}

if (PARTS.includes('threads')) {
  console.log(
    '\n| threads re-check (native build), model | 1 thread tok/s (rounds) | 2 threads tok/s (rounds) | 2 ÷ 1 (median of paired) | load before → after |',
  );
  console.log('| --- | --- | --- | --- | --- |');
  for (const preset of PRESETS) {
    const modelPath = await ensureModel(preset);
    const before = load();
    const why = 'threads re-check';
    const pair = await engine.measurePair({
      modelPath,
      preset,
      tokens: TOKENS[preset],
      rounds: ROUNDS,
      a: { name: '2 threads', binary: { binary: 'native', why }, threads: 2 },
      b: { name: '1 thread', binary: { binary: 'native', why }, threads: 1 },
      onProgress: say,
    });
    console.log(
      `| ${preset}, ${TOKENS[preset]} | ${pair.bTokS.map((t) => fmt(t)).join(', ')} | ` +
        `${pair.aTokS.map((t) => fmt(t)).join(', ')} | ${fmt(pair.ratio, 3)} | ${before} → ${load()} |`,
    );
  }
}

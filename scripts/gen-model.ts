/**
 * Writes a deterministic random-weights GGUF test model.
 *
 *   npx tsx scripts/gen-model.ts --preset small --seed 1 --out path.gguf [--type q8_0|f16|f32]
 *
 * Prints one JSON line: { path, bytes, params, preset, seed, ms }.
 */
import { parseArgs } from 'node:util';
import { generateTestModel, type GgmlType, type TestModelPreset } from '../src/engine/gguf/index.js';

const PRESETS: readonly TestModelPreset[] = ['tiny', 'small'];
const TYPES: readonly GgmlType[] = ['q8_0', 'f16', 'f32'];

const { values } = parseArgs({
  options: {
    preset: { type: 'string', default: 'tiny' },
    seed: { type: 'string', default: '1' },
    out: { type: 'string' },
    type: { type: 'string', default: 'q8_0' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

const usage = 'usage: gen-model.ts --out FILE.gguf [--preset tiny|small] [--seed N] [--type q8_0|f16|f32]';
if (values.help) {
  console.log(usage);
  process.exit(0);
}
const preset = PRESETS.find((p) => p === values.preset);
const weightType = TYPES.find((t) => t === values.type);
const seed = Number(values.seed);
if (values.out === undefined || preset === undefined || weightType === undefined || !Number.isInteger(seed)) {
  console.error(usage);
  process.exit(2);
}

const controller = new AbortController();
const onSignal = (): void => controller.abort();
process.once('SIGINT', onSignal);
process.once('SIGTERM', onSignal);
const started = performance.now();
try {
  const result = await generateTestModel({
    path: values.out,
    preset,
    seed,
    weightType,
    signal: controller.signal,
  });
  const ms = Math.round(performance.now() - started);
  console.log(JSON.stringify({ ...result, preset, seed, weightType, ms }));
} catch (error) {
  console.error(error);
  process.exitCode = 1;
} finally {
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
}

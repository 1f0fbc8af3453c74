/**
 * `rbee place MODEL [--on HIVE]`: where a job for the model would run, and why — the scheduler's
 * own table over every hive of the cluster, each hive with its devices, whether the model fits
 * there, on what figures, and the speed to expect from what was observed. Nothing loads.
 */
import type { Command, Option } from 'commander';
import { mib } from '../../shared/format.js';
import type { PlaceOption, PlacePreview } from '../../shared/view.js';
import { MIN_CONTEXT_SIZE } from '../../shared/wire.js';
import { intArg, type CommonOptions, type Keeper } from './keeper.js';

export function registerPlace(root: Command, keeper: Keeper, json: () => Option, port: () => Option): void {
  root
    .command('place')
    .description('where a job for MODEL would run, and why: every hive and device, nothing loaded')
    .argument('<model>', 'demo, hf:org/repo[:quant], a URL, a path, or a model id')
    .option('--on <hive>', 'only this hive (its name or id), as `rbee infer --on` would pin it')
    .option(
      '--context-size <n>',
      'the least context (tokens per slot) the job would ask for, as `rbee infer --context-size`',
      intArg('--context-size', MIN_CONTEXT_SIZE),
    )
    .addOption(json())
    .addOption(port())
    .action((model: string, opts: CommonOptions & { on?: string; contextSize?: number }) =>
      keeper.withNode(opts, async (client, output) => {
        const preview = await client.place(model, {
          ...(opts.on === undefined ? {} : { hive: opts.on }),
          ...(opts.contextSize === undefined ? {} : { contextSize: opts.contextSize }),
        });
        output.result(preview, render(preview));
      }),
    );
}

export function render(preview: PlacePreview): string {
  const head = `${preview.ref} is model ${preview.model} (table computed on ${preview.node})`;
  const verdict =
    preview.placement === null
      ? 'no hive can take it now'
      : `a job would run on hive ${preview.placement.name} (${preview.placement.kind}): ${preview.placement.reason}`;
  return [head, verdict, '', ...preview.options.flatMap((o) => hive(o, preview))].join('\n');
}

function hive(option: PlaceOption, preview: PlacePreview): string[] {
  const mark = preview.placement?.hive === option.hive ? '*' : ' ';
  const needed =
    option.needed === undefined
      ? 'size unknown until fetched'
      : `needs ${mib(option.needed.bytes, 0)} (${option.needed.basis})`;
  const free = option.freeBytes === undefined ? '' : `, ${mib(option.freeBytes, 0)} free`;
  const { tokensPerSecond: rate, timeToFirstTokenMs: ttft } = option.expected;
  const speed = [
    `tok/s ${rate === undefined ? 'no data' : `${rate.value.toFixed(1)} ${basis(rate)}`}`,
    `first token ${ttft === undefined ? 'no data' : `${Math.round(ttft.value)} ms ${basis(ttft)}`}`,
  ].join(', ');
  return [
    `${mark} ${option.name}\t${option.kind}\t${needed}${free}\t${speed}`,
    ...option.devices.map(
      (d) =>
        `    ${d.chosen ? '→' : ' '} ${d.name.padEnd(14)} ${mib(d.freeBytes, 0).padStart(10)} free  ` +
        (d.allowed ? (d.fits ? 'fits' : 'no room') : 'not used (the hive’s backend setting)'),
    ),
    `    ${option.why}`,
  ];
}

function basis(figure: { basis: 'worker' | 'jobs'; jobs?: number | undefined }): string {
  const jobs = figure.jobs ?? 0;
  return figure.basis === 'worker'
    ? '(the warm worker, last second)'
    : `(median of ${jobs} past job${jobs === 1 ? '' : 's'})`;
}

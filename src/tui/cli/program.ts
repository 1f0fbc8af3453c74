/**
 * The `rbee` command line: argv → keeper subcommands. The daemon itself (`rbee node`) and the
 * dashboard are injected by main.ts, so this module loads no native code.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import { parseKeepAlive } from '../../shared/duration.js';
import { RbeeError } from '../../shared/errors.js';
import { DEFAULT_HOST, DEFAULT_PORT } from '../../shared/paths.js';
import { VERSION } from '../../shared/version.js';
import { MIN_CONTEXT_SIZE } from '../../shared/wire.js';
import type { BackendInfoView, JobRequest, KeyReplicationView } from '../../shared/wire.js';
import { stopNode } from '../../node/client/index.js';
import { runInfer } from './infer.js';
import { runStatusJson } from './status-json.js';
import { registerJobs } from './jobs-commands.js';
import { registerPlace } from './place-command.js';
import { mib } from '../../shared/format.js';
import { formatDuration, formatGiB } from '../dashboard/format.js';
import { floatArg, intArg, type CommonOptions, type Keeper } from './keeper.js';
import type { LiveStatus } from './live-status.js';

export interface NodeForegroundOptions {
  host?: string;
  port?: number;
  logLevel?: string;
  /** `--peer` (repeatable) */
  peer?: string[];
  /** `--mdns` / `--no-mdns`; undefined when neither was given. */
  mdns?: boolean;
  clusterListen?: string[];
}

export interface ProgramInit {
  keeper: Keeper;
  /** `rbee node`: runs the daemon in this process until it stops. */
  runNode: (options: NodeForegroundOptions) => Promise<void>;
  /** `rbee` alone: the dashboard. Resolves with the exit code. */
  runDashboard?: (options: CommonOptions) => Promise<number>;
}

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

interface InferOptions {
  model: string;
  keepAlive?: string;
  maxTokens?: number;
  contextSize?: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  seed?: number;
  stop?: string[];
  system?: string;
  on?: string;
  batch?: boolean;
}

function readPrompt(arg: string | undefined): string {
  if (arg !== undefined && arg !== '-') return arg;
  if (arg === undefined && process.stdin.isTTY) {
    throw new RbeeError('PROMPT_MISSING', 'give a prompt as an argument, or pipe one in with `-`');
  }
  let text = '';
  try {
    text = readFileSync(0, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'EAGAIN' && code !== 'EOF') {
      throw new RbeeError('PROMPT_MISSING', 'could not read a prompt from standard input', { cause: error });
    }
  }
  if (text.trim() === '') {
    throw new RbeeError('PROMPT_MISSING', 'standard input gave no prompt (it was empty or closed)');
  }
  return text;
}

/** A local path is made absolute here, since the node may run in another directory. */
function resolveModelArg(ref: string): string {
  const looksLocal =
    ref.startsWith('./') || ref.startsWith('../') || (ref.endsWith('.gguf') && !ref.includes(':'));
  return looksLocal ? resolve(ref) : ref;
}

/** Ctrl-C aborts the returned signal once; a second Ctrl-C exits at once. */
function interruptSignal(): AbortSignal {
  const controller = new AbortController();
  process.on('SIGINT', () => {
    if (controller.signal.aborted) process.exit(130);
    controller.abort(new RbeeError('JOB_CANCELLED', 'interrupted'));
  });
  return controller.signal;
}

export function createProgram(init: ProgramInit): Command {
  const { keeper } = init;
  const json = (): Option => new Option('--json', 'machine-readable output (NDJSON for streams), no UI');
  const port = (): Option =>
    new Option(
      '--port <port>',
      `the local node's HTTP port (env RBEE_PORT, default ${DEFAULT_PORT})`,
    ).argParser(intArg('--port', 0));

  const root = new Command('rbee')
    .description('Turn every machine on your LAN into one private LLM inference cluster')
    .version(VERSION)
    .addOption(port())
    .addOption(
      new Option(
        '--json',
        'machine-readable output for any command; alone: one JSON line of what the dashboard shows',
      ),
    )
    .option('--watch', 'with --json alone: that line, then one NDJSON line per change, until Ctrl-C')
    // Options before a subcommand belong to `rbee`; after it, to the subcommand (each has its own
    // --json). `rbee --json CMD` hands --json and --port down to the command (the hook below).
    .enablePositionalOptions()
    .showHelpAfterError()
    // Subcommands inherit this: usage errors reach main.ts as CommanderError (exit 2, BAD_REQUEST).
    .exitOverride()
    .hook('preAction', (_root, command) => {
      if (command === root) return;
      const global = root.opts<CommonOptions>();
      if (global.json === true && command.getOptionValue('json') === undefined) {
        command.setOptionValue('json', true);
      }
      if (global.port !== undefined && command.getOptionValue('port') === undefined) {
        command.setOptionValue('port', global.port);
      }
    })
    .action(async (opts: CommonOptions & { watch?: boolean }) => {
      if (opts.json === true) {
        await keeper.withNode({ ...opts, json: true }, (client) =>
          runStatusJson({
            client,
            watch: opts.watch === true,
            write: (line) => void process.stdout.write(`${line}\n`),
            signal: interruptSignal(),
          }),
        );
        return;
      }
      if (opts.watch === true)
        throw new RbeeError('BAD_REQUEST', '--watch goes with --json: `rbee --json --watch`');
      if (init.runDashboard === undefined || !process.stdout.isTTY) {
        root.outputHelp();
        return;
      }
      process.exitCode = await init.runDashboard(opts);
    });

  root
    .command('infer')
    .description('run a prompt on a model, waking the local node if it is asleep')
    .requiredOption(
      '-m, --model <ref>',
      'a name from `rbee models ls` or an alias; demo, hf:org/repo[:quant], hf:org/repo/file.gguf, https://…/x.gguf, or a path',
    )
    .argument('[prompt]', 'the prompt; `-` or none reads standard input')
    .option('--max-tokens <n>', 'most tokens to generate', intArg('--max-tokens', 1))
    .option(
      '--context-size <n>',
      'least context per slot (tokens) the worker must have; one with less is reloaded with this much',
      intArg('--context-size', MIN_CONTEXT_SIZE),
    )
    .option('--temperature <t>', 'sampling temperature (0 = greedy)', floatArg('--temperature', 0, 5))
    .option('--top-p <p>', 'nucleus sampling', floatArg('--top-p', 0, 1))
    .option('--top-k <k>', 'top-k sampling', intArg('--top-k', 0))
    .option('--seed <n>', 'random seed', intArg('--seed', 0))
    .option('--stop <text>', 'stop sequence (repeatable)', collect)
    .option('--system <text>', 'system prompt')
    .option('--on <hive>', 'run on this hive (its name) instead of where the queen places the job')
    .option('--batch', 'a batch job: interactive jobs go first when the queue holds both')
    .option(
      '--keep-alive <duration>',
      'how long the model stays loaded afterwards: 30s, 5m, 0, -1 (never unload)',
    )
    .addOption(json())
    .addOption(port())
    .action(async (promptArg: string | undefined, opts: CommonOptions & InferOptions) => {
      const prompt = readPrompt(promptArg);
      const request: JobRequest = { model: resolveModelArg(opts.model), prompt };
      if (opts.keepAlive !== undefined) request.keepAlive = parseKeepAlive(opts.keepAlive);
      if (opts.on !== undefined) request.hive = opts.on;
      if (opts.batch === true) request.priority = 'batch';
      for (const key of [
        'maxTokens',
        'contextSize',
        'temperature',
        'topP',
        'topK',
        'seed',
        'stop',
        'system',
      ] as const) {
        if (opts[key] !== undefined) Object.assign(request, { [key]: opts[key] });
      }
      const live = await liveStatusFor(opts);
      try {
        process.exitCode = await runInfer({
          client: keeper.client(opts),
          output: keeper.output(opts, { stream: true, live }),
          request,
          wake: { mainScript: keeper.mainScript, env: keeper.nodeEnv(opts), nodeLog: keeper.nodeLog() },
          signal: interruptSignal(),
        });
      } finally {
        live?.stop();
      }
    });

  const node = root
    .command('node')
    .description("run this machine's node in the foreground (or start|stop|status it in the background)")
    .option('--host <host>', `address to listen on (env RBEE_HOST, default ${DEFAULT_HOST})`)
    .addOption(port())
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent (env RBEE_LOG_LEVEL)')
    .option(
      '--peer <multiaddr>',
      'a static peer, e.g. /ip4/192.168.1.20/tcp/7834 (repeatable; env RBEE_PEERS)',
      collect,
    )
    .option('--mdns', 'find peers on the LAN by multicast (the default; env RBEE_MDNS=1)')
    .option('--no-mdns', 'no multicast discovery: static and known peers only (env RBEE_MDNS=0)')
    .option(
      '--cluster-listen <multiaddr>',
      'where peers connect (repeatable; env RBEE_CLUSTER_LISTEN, default /ip4/0.0.0.0/tcp/7834)',
      collect,
    )
    .action((opts: NodeForegroundOptions) => init.runNode(opts));

  node
    .command('start')
    .description('start the node in the background')
    .addOption(json())
    .addOption(port())
    .action(async (opts: CommonOptions) => {
      const output = keeper.output(opts);
      const awake = await keeper.wake(opts, keeper.client(opts), output);
      output.result(
        { ...awake.health, started: awake.woke },
        awake.woke
          ? `node started (pid ${awake.health.pid})`
          : `node already running (pid ${awake.health.pid})`,
      );
    });

  node
    .command('stop')
    .description('stop the background node and its workers')
    .addOption(json())
    .addOption(port())
    .action(async (opts: CommonOptions) => {
      const client = keeper.client(opts);
      const health = await client.health();
      const { forced } = await stopNode(client, health.pid);
      keeper
        .output(opts)
        .result({ stopped: true, pid: health.pid, forced }, `node stopped (pid ${health.pid})`);
    });

  node
    .command('status')
    .description('is the node running?')
    .addOption(json())
    .addOption(port())
    .action(async (opts: CommonOptions) => {
      const h = await keeper.client(opts).health();
      keeper
        .output(opts)
        .result(h, `node ${h.node} ${h.state} (pid ${h.pid}, up ${h.uptimeS} s, v${h.version})`);
    });

  registerModels(root, keeper, json, port);
  registerWorkers(root, keeper, json, port);
  registerCluster(root, keeper, json, port);
  registerKeys(root, keeper, json, port);
  registerJobs(root, keeper, json, port);
  registerPlace(root, keeper, json, port);

  root
    .command('doctor')
    .description('check this machine: Node, the llama.cpp binary and CPU features, threads, GPUs, disk')
    .option(
      '--fix',
      'build llama.cpp for this CPU (once, offline; minutes) and measure it against the prebuilt binary: ' +
        'CPU workers use it only if it is faster (Ctrl-C cancels, keeping nothing half-built)',
    )
    .option('--small', 'with --fix: measure on the small generated model too (slower)')
    .option(
      '--cancel',
      "with --fix: cancel the native build running on the node (this command's, or the one the node " +
        'started at an idle moment), keeping nothing half-built',
    )
    .addOption(json())
    .addOption(port())
    .action((opts: CommonOptions & { fix?: boolean; small?: boolean; cancel?: boolean }) =>
      keeper.withNode(
        opts,
        async (client, output) => {
          if (opts.cancel === true) {
            if (opts.fix !== true) throw new RbeeError('BAD_REQUEST', '--cancel goes with --fix');
            const cancelled = await client.doctorFixCancel();
            output.result(cancelled, cancelled.text);
            return;
          }
          const report =
            opts.fix === true
              ? await client.doctorFix({
                  ...(opts.small === true ? { presets: ['tiny', 'small'] } : {}),
                  signal: interruptSignal(),
                  onProgress: (text) => output.narrate('hive', text),
                })
              : await client.doctor();
          const mark = { ok: '✓', hint: '•', warn: '!', fail: '✗' } as const;
          const lines = [
            `rbee ${report.node.version} on ${report.node.name} (${report.node.platform}, Node v${report.node.nodeVersion})`,
            ...report.checks.flatMap((c) => [
              `${mark[c.status]} ${c.summary}`,
              ...(c.fix === undefined ? [] : [`  → ${c.fix}`]),
            ]),
          ];
          output.result(report, lines.join('\n'));
          // A failed check is a broken installation: say so in the exit code too.
          if (report.checks.some((c) => c.status === 'fail')) process.exitCode = 1;
        },
        { stream: opts.fix === true },
      ),
    );
  return root;
}

function registerModels(root: Command, keeper: Keeper, json: () => Option, port: () => Option): void {
  const models = root.command('models').description("models in this node's catalog");
  models
    .command('ls')
    .description("list every hive's models, by the names that work as -m")
    .option('--cluster', 'every model file of the cluster with the hives that hold it (sha256, size)')
    .addOption(json())
    .addOption(port())
    .action((opts: CommonOptions & { cluster?: boolean }) =>
      keeper.withNode(opts, async (client, output) => {
        if (opts.cluster === true) {
          const files = await client.clusterModels();
          output.result(
            files,
            files.length === 0
              ? 'no models on any hive yet (try `rbee models pull demo`)'
              : files
                  .map(
                    (m) =>
                      `${m.name}\t${mib(m.bytes)}\t${m.sha256 ?? 'sha256 unknown'}\t` +
                      `${m.hives.map((h) => h.name).join(',')}\t${m.ref ?? '(a local file)'}`,
                  )
                  .join('\n'),
          );
          return;
        }
        const rows = await client.models();
        const names = (m: (typeof rows)[number]): string => [m.id, ...m.aliases].join(', ');
        output.result(
          rows,
          rows.length === 0
            ? 'no models yet (try `rbee models pull demo`)'
            : rows
                .map((m) => `${names(m)}\t${mib(m.bytes)}\t${m.hives.join(',')}\t${m.description}`)
                .join('\n'),
        );
      }),
    );

  models
    .command('pull')
    .alias('add')
    .description('download a model (or generate `demo`) into the catalog')
    .argument(
      '<ref>',
      'demo, hf:org/repo[:quant], hf:org/repo/file.gguf, https://…/x.gguf, a path, or the name or sha256 of a model of the cluster',
    )
    .option(
      '--from <hive>',
      'fetch it from this hive of the cluster (by default a hive that has it is preferred)',
    )
    .addOption(json())
    .addOption(port())
    .action(async (ref: string, opts: CommonOptions & { from?: string }) => {
      // Off a terminal, downloading narrates a plain line a second instead of the bar.
      const live = await liveStatusFor(opts);
      try {
        await keeper.withNode(
          opts,
          async (client, output) => {
            let lastLine = 0;
            let phase = '';
            const done = await client.pullModel(resolveModelArg(ref), {
              ...(opts.from === undefined ? {} : { from: opts.from }),
              onProgress: (p) => {
                if (output.json) return output.result(p, '');
                if (p.phase === 'done') return; // the result line says it
                const from = p.from === undefined ? '' : ` from ${p.from}`;
                const what = p.message ?? `${p.phase} ${p.file ?? ref}${from}`;
                if (live !== undefined && p.phase === 'downloading') {
                  if (phase !== p.phase) live.line(`[hive] ${what}`);
                  phase = p.phase;
                  live.status(what);
                  return live.progress(p);
                }
                phase = p.phase;
                const now = Date.now();
                if (p.phase === 'downloading' && now - lastLine < 1000) return;
                lastLine = now;
                const pct = p.totalBytes ? ` ${((100 * p.bytes) / p.totalBytes).toFixed(0)}%` : '';
                const rate = p.bytesPerSecond ? ` ${mib(p.bytesPerSecond)}/s` : '';
                const eta = p.etaSeconds !== undefined ? ` ETA ${Math.ceil(p.etaSeconds)} s` : '';
                output.narrate('hive', p.message ?? `${what}${pct}${rate}${eta}`);
              },
            });
            live?.stop();
            output.result(
              done,
              `${done.cached ? 'already on disk' : 'pulled'}: ${done.model.id} (${mib(done.model.bytes)})`,
            );
          },
          { stream: true, live },
        );
      } finally {
        live?.stop();
      }
    });

  models
    .command('alias')
    .description(
      'name a model: `alias NAME REF` (REF: a ref, a model name or id), `alias rm NAME`, `alias ls`',
    )
    .argument('<name>', 'the new name, or `rm` / `ls`')
    .argument('[ref]', 'what it names (with `rm`: the alias to remove)')
    .addOption(json())
    .addOption(port())
    .action((name: string, ref: string | undefined, opts: CommonOptions) =>
      keeper.withNode(opts, async (client, output) => {
        if (name === 'ls') {
          const aliases = await client.aliases();
          output.result(
            aliases,
            aliases.length === 0 ? 'no aliases' : aliases.map((a) => `${a.name}\t${a.ref}`).join('\n'),
          );
          return;
        }
        if (ref === undefined) {
          throw new RbeeError(
            'BAD_REQUEST',
            name === 'rm' ? 'give the alias to remove' : 'give the ref it names',
          );
        }
        if (name === 'rm') {
          const removed = await client.removeAlias(ref);
          output.result(removed, `removed alias ${removed.removed}`);
          return;
        }
        const alias = await client.setAlias(name, resolveModelArg(ref));
        output.result(alias, `${alias.name} → ${alias.ref}`);
      }),
    );

  models
    .command('rm')
    .description('remove a model from the catalog and the disk (refused while a worker uses it)')
    .argument('<id>', 'model name, id, ref or alias')
    .addOption(json())
    .addOption(port())
    .action((id: string, opts: CommonOptions) =>
      keeper.withNode(opts, async (client, output) => {
        const removed = await client.deleteModel(id);
        output.result(removed, `removed ${removed.removed}`);
      }),
    );

  models
    .command('info')
    .description('show one model')
    .argument('<id>', 'model name, id, ref or alias')
    .addOption(json())
    .addOption(port())
    .action((id: string, opts: CommonOptions) =>
      keeper.withNode(opts, async (client, output) => {
        const model = await client.model(id);
        output.result(
          model,
          Object.entries(model)
            .map(([k, v]) => `${k}: ${String(v)}`)
            .join('\n'),
        );
      }),
    );
}

/**
 * What a streaming command (infer, pull) draws on a terminal: narration above a spinner and, while
 * a download runs, its progress bar. Nothing off a terminal or with --json. Stop it when done.
 */
async function liveStatusFor(opts: CommonOptions): Promise<LiveStatus | undefined> {
  if (opts.json === true || !process.stderr.isTTY) return undefined;
  return (await import('./live-status.js')).createLiveStatus(process.stderr);
}

function registerWorkers(root: Command, keeper: Keeper, json: () => Option, port: () => Option): void {
  const workers = root.command('workers').description('workers (llama.cpp processes) of the cluster');
  workers
    .command('ls')
    .description('list the workers running on every hive of the cluster')
    .addOption(json())
    .addOption(port())
    .action(async (opts: CommonOptions) => {
      // Listing does not wake a sleeping node: a node that is asleep has no workers.
      const output = keeper.output(opts);
      const rows = await keeper
        .client(opts)
        .clusterWorkers()
        .catch((error: unknown) => {
          if (error instanceof RbeeError && error.code === 'NODE_UNREACHABLE') return [];
          throw error;
        });
      output.result(
        rows,
        rows.length === 0
          ? 'no workers running'
          : rows
              .map(
                (w) =>
                  `${w.id}\t${w.hiveName}${w.local ? ' (this node)' : ''}\tpid ${w.pid}\t${w.model}\t` +
                  `${w.state}\t${w.slotsBusy}/${w.slots} slots\t` +
                  `${w.tokensPerSecond.toFixed(1)} tok/s\t${mib(w.memoryBytes)}` +
                  (w.binary === undefined ? '' : `\t${w.binary.label}`) +
                  (w.flashAttention === true ? '\tflash attention' : ''),
              )
              .join('\n'),
      );
    });

  workers
    .command('history')
    .description(
      'the workers this node has started, newest first: the llama.cpp binary each ran and why, how long it ran',
    )
    .option('--limit <n>', 'at most this many (default 20, at most 1000)', intArg('--limit', 1))
    .addOption(json())
    .addOption(port())
    .action((opts: CommonOptions & { limit?: number }) =>
      keeper.withNode(opts, async (client, output) => {
        const rows = await client.workerHistory({ limit: Math.min(opts.limit ?? 20, 1000) });
        const now = Date.now();
        output.result(
          rows,
          rows.length === 0
            ? 'no worker started yet'
            : rows
                .map((w) =>
                  [
                    [
                      w.id,
                      w.model,
                      w.backend === 'cpu' ? 'cpu' : `${w.backend}:${w.device}`,
                      `pid ${w.pid}`,
                      `ready ${new Date(w.readyAt).toISOString()}`,
                      w.running
                        ? `running for ${formatDuration(now - w.readyAt)}`
                        : w.exitedAt === undefined
                          ? 'its exit was not recorded (the node stopped first)'
                          : `ran ${formatDuration(w.exitedAt - w.readyAt)}`,
                    ].join('\t'),
                    `  ${w.binary === undefined ? 'binary not recorded' : `${w.binary.label}: ${w.binary.why}`}`,
                  ].join('\n'),
                )
                .join('\n'),
        );
      }),
    );

  workers
    .command('backends')
    .description('the worker catalog: backends this machine can run, with their build')
    .addOption(json())
    .addOption(port())
    .action((opts: CommonOptions) =>
      keeper.withNode(opts, async (client, output) => {
        // Detection runs in the background after start-up: wait for it briefly.
        let rows: BackendInfoView[] = [];
        for (let i = 0; i < 100 && rows.length === 0; i++) {
          rows = await client.backends();
          if (rows.length === 0) await new Promise((resolve) => setTimeout(resolve, 100));
        }
        output.result(
          rows,
          rows
            .map(
              (b) =>
                `${b.name}\t${b.available ? 'available' : 'not available'}\t` +
                `${b.binary === undefined ? 'no binary installed' : `${b.binary.package}@${b.binary.version}`}\t` +
                `${b.devices.join(', ')}` +
                (b.workersLoad === undefined
                  ? ''
                  : `\tworkers load the ${b.workersLoad.binary === 'native' ? 'native build' : 'prebuilt binary'}: ${b.workersLoad.why}`),
            )
            .join('\n'),
        );
      }),
    );

  workers
    .command('spawn')
    .description('load a model into a new worker (kept for its keep-alive)')
    .argument('<model>', 'model ref or id')
    .addOption(json())
    .addOption(port())
    .action(async (model: string, opts: CommonOptions) => {
      const output = keeper.output(opts);
      const client = keeper.client(opts);
      // A spawned worker lives in the node, so the node is started and left running.
      await keeper.wake(opts, client, output);
      const { worker } = await client.spawnWorker(resolveModelArg(model));
      output.result(worker, `worker ${worker.id} ready (pid ${worker.pid}, ${worker.model})`);
    });

  workers
    .command('stop')
    .description('stop a worker')
    .argument('<id>', 'worker id')
    .addOption(json())
    .addOption(port())
    .action(async (id: string, opts: CommonOptions) => {
      await keeper.client(opts).stopWorker(id);
      keeper.output(opts).result({ stopped: id }, `worker ${id} stopped`);
    });
}

function optional<T>(cluster: T | undefined): { cluster?: T } {
  return cluster === undefined ? {} : { cluster };
}

function shortId(id: string): string {
  return id.length > 16 ? `${id.slice(0, 6)}…${id.slice(-6)}` : id;
}

function registerCluster(root: Command, keeper: Keeper, json: () => Option, port: () => Option): void {
  const hives = root.command('hives').description('the machines (hives) of the cluster');
  hives
    .command('ls')
    .description('list every hive the local node sees: devices, memory, queen, workers, models')
    .addOption(json())
    .addOption(port())
    .action((opts: CommonOptions) =>
      keeper.withNode(opts, async (client, output) => {
        const status = await client.cluster();
        const view = status.hives;
        output.result(
          view,
          view
            .map((h) => {
              const gpus = h.gpus.map(
                (g) =>
                  `${g.name} ${formatGiB(g.vramFreeBytes)} GiB free of ${formatGiB(g.vramTotalBytes)} GiB`,
              );
              return [
                `${h.queen ? '♛' : ' '} ${h.name}${h.local ? ' (this node)' : ''}`,
                shortId(h.id),
                h.health,
                `${h.cpu.physicalCores} cores`,
                `RAM ${formatGiB(h.ramFreeBytes)} GiB free of ${formatGiB(h.ramTotalBytes)} GiB`,
                h.loadAverage === undefined ? '' : `load ${h.loadAverage.toFixed(2)}`,
                gpus.length === 0 ? 'no GPU' : gpus.join(', '),
                h.queen ? `queen, term ${h.term}` : '',
                h.engineBuild === undefined ||
                h.engineBuild.state === 'pending' ||
                h.engineBuild.state === 'done'
                  ? ''
                  : `llama.cpp build ${h.engineBuild.state}${h.engineBuild.percent === undefined ? '' : ` ${h.engineBuild.percent}%`}`,
              ]
                .filter((field) => field !== '')
                .join('\t');
            })
            .join('\n'),
        );
      }),
    );

  root
    .command('shutdown')
    .description('stop the local node and its workers; --cluster: every node of the cluster')
    .option('--cluster', 'the queen tells every hive to stop (under its term, so a deposed queen cannot)')
    .addOption(json())
    .addOption(port())
    .action(async (opts: CommonOptions & { cluster?: boolean }) => {
      const client = keeper.client(opts);
      const health = await client.health();
      const stopped = await stopNode(client, health.pid, { cluster: opts.cluster === true });
      const others = stopped.cluster?.hives.length ?? 0;
      keeper
        .output(opts)
        .result(
          { stopped: true, pid: health.pid, forced: stopped.forced, ...optional(stopped.cluster) },
          stopped.cluster === undefined
            ? `node stopped (pid ${health.pid})`
            : `cluster stopped by the queen (term ${stopped.cluster.term}): this node and ${others} other hive(s)`,
        );
    });

  const cluster = root.command('cluster').description('membership, the queen, and joining machines');
  cluster
    .command('status', { isDefault: true })
    .description('members, the queen and her term, and how this node finds peers')
    .addOption(json())
    .addOption(port())
    .action((opts: CommonOptions) =>
      keeper.withNode(opts, async (client, output) => {
        const s = await client.cluster();
        const live = s.members.filter((m) => m.live);
        const lines = [
          s.enabled ? `cluster ${s.state}` : 'clustering is off (RBEE_CLUSTER=0): this hive runs alone',
          `this node: ${s.self.name} ${s.self.id}`,
          s.queen === null
            ? 'queen: none yet (electing)'
            : `queen: ${s.queen.name ?? s.queen.id}${s.isQueen ? ' (this node)' : ''}, term ${s.queen.term}`,
          `members: ${live.length + 1} live` +
            (s.members.length > live.length ? `, ${s.members.length - live.length} gone` : ''),
          ...s.members.map(
            (m) => `  ${m.live ? 'live' : 'gone'}\t${m.name ?? '?'}\t${m.id}\t${m.addrs.join(' ')}`,
          ),
          `discovery: mDNS ${s.mdns ? 'on' : 'off'}` +
            (s.staticPeers.length > 0 ? `; static peers ${s.staticPeers.join(' ')}` : ''),
          ...(s.listen.length > 0 ? [`listening on ${s.listen.join(' ')}`] : []),
          ...s.duplicates.map(
            (id) => `DUPLICATE: another live node also answers for ${id} (copied data directory?)`,
          ),
          ...(s.error === undefined ? [] : [`error: ${s.error.code}: ${s.error.message}`]),
        ];
        output.result(s, lines.join('\n'));
      }),
    );

  cluster
    .command('code')
    .description("print this cluster's join code (for `rbee join CODE` on another machine)")
    .addOption(json())
    .action(async (opts: CommonOptions) => {
      const { clusterJoinCode } = await import('../../node/client/cluster-keys.js');
      const { code, created } = await clusterJoinCode(keeper.paths());
      keeper
        .output(opts)
        .result(
          { code, created },
          `${code}\n\non another machine: rbee join ${code}\n(keep it secret: it lets a machine into the cluster)`,
        );
    });

  root
    .command('join')
    .description('make this machine a member of the cluster whose join code is CODE')
    .argument('<code>', 'the code `rbee cluster code` printed on a machine of the cluster')
    .addOption(json())
    .addOption(port())
    .action(async (code: string, opts: CommonOptions) => {
      const { joinWithCode } = await import('../../node/client/cluster-keys.js');
      const { changed } = await joinWithCode(keeper.paths(), code);
      const running = await keeper
        .client(opts)
        .health()
        .then(
          (h) => h.pid,
          () => undefined,
        );
      const restart = changed && running !== undefined;
      keeper
        .output(opts)
        .result(
          { joined: true, changed, restartNeeded: restart },
          !changed
            ? 'this machine already holds that cluster key'
            : restart
              ? `cluster key stored; restart the node to join (rbee node stop && rbee node start)`
              : 'cluster key stored; the node joins the cluster when it starts',
        );
    });
}

function registerKeys(root: Command, keeper: Keeper, json: () => Option, port: () => Option): void {
  const keys = root
    .command('keys')
    .description("API keys: what clients beyond this machine need to use this node's API");
  keys
    .command('create')
    .description('create a key and print it (the only time it is shown)')
    .option('--name <name>', 'what the key is for, e.g. "laptop editor"')
    .option(
      '--max-concurrent <n>',
      'jobs of this key running at once on a node (more: 429 RATE_LIMITED)',
      intArg('--max-concurrent', 1),
    )
    .option('--rpm <n>', 'requests of this key that run a model, per minute, on a node', intArg('--rpm', 1))
    .addOption(json())
    .addOption(port())
    .action((opts: CommonOptions & { name?: string; maxConcurrent?: number; rpm?: number }) =>
      keeper.withNode(opts, async (client, output) => {
        const created = await client.createKey({
          name: opts.name,
          maxConcurrent: opts.maxConcurrent,
          rpm: opts.rpm,
        });
        output.result(
          created,
          `${created.key}\n(key ${created.id}, "${created.name}": shown once; send it as Authorization: Bearer …)` +
            replicationLine(created.cluster),
        );
      }),
    );
  keys
    .command('ls')
    .description('list the keys (their ids and names; the keys themselves are not stored)')
    .addOption(json())
    .addOption(port())
    .action((opts: CommonOptions) =>
      keeper.withNode(opts, async (client, output) => {
        const rows = await client.keys();
        const when = (ts: number | undefined): string =>
          ts === undefined ? 'never used here' : `last used here ${new Date(ts).toISOString()}`;
        const limits = (k: { maxConcurrent?: number; rpm?: number }): string =>
          [
            ...(k.maxConcurrent === undefined ? [] : [`max ${k.maxConcurrent} at once`]),
            ...(k.rpm === undefined ? [] : [`${k.rpm}/min`]),
          ].join(', ') || 'node defaults';
        output.result(
          rows,
          rows.length === 0
            ? 'no API keys (clients on this machine need none)'
            : rows
                .map(
                  (k) =>
                    `${k.id}\t${k.name}\tcreated ${new Date(k.createdAt).toISOString()}\t${limits(k)}\t${when(k.lastUsedAt)}`,
                )
                .join('\n'),
        );
      }),
    );
  keys
    .command('rm')
    .description('revoke a key: clients using it are refused from the next request, on every node')
    .argument('<id>', 'the key id (from `rbee keys ls`)')
    .addOption(json())
    .addOption(port())
    .action((id: string, opts: CommonOptions) =>
      keeper.withNode(opts, async (client, output) => {
        const removed = await client.removeKey(id);
        output.result(removed, `revoked ${removed.removed}${replicationLine(removed.cluster)}`);
      }),
    );
}

/** What `/v1/keys` answers about a change's way through the cluster (none for a node alone). */
function replicationLine(cluster: KeyReplicationView | undefined): string {
  if (cluster === undefined) return '';
  if ('pending' in cluster) return `\nthis node only for now: ${cluster.pending}`;
  const where =
    cluster.hives === 0
      ? 'the cluster had it already'
      : `${cluster.hives} node(s) of the cluster hold it now`;
  return `\n${where} (key set version ${cluster.version}, term ${cluster.term}); nodes away get it when they return`;
}

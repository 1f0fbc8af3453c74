#!/usr/bin/env node
/**
 * Composition root: argv → the keeper's subcommands, or `rbee node` (the daemon).
 * Native code (llama.cpp, SQLite) is loaded only by the daemon, through a dynamic import.
 */
import './shared/polyfill.js';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { RbeeError } from './shared/errors.js';
import { dataPaths, DEFAULT_HOST, DEFAULT_PORT, resolveDataDir } from './shared/paths.js';
import { VERSION } from './shared/version.js';
import type { JobRequest } from './shared/wire.js';
import { createNodeClient, ensureNodeAwake, isAlive, stopNode } from './node/client/index.js';
import { createOutput, type Output } from './tui/keeper/output.js';
import { runInfer } from './tui/keeper/infer.js';

const MAIN_SCRIPT = fileURLToPath(import.meta.url);

interface CommonOptions {
  json?: boolean;
  port?: number;
}

function intArg(name: string, min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer ≥ ${min}`);
    return n;
  };
}
function floatArg(name: string, min: number, max: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${name} must be a number between ${min} and ${max}`);
    }
    return n;
  };
}
const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

/** Where the keeper finds the local node: --port, else RBEE_PORT, else the default. */
function nodeUrl(options: CommonOptions): string {
  const port = options.port ?? (process.env.RBEE_PORT ? Number(process.env.RBEE_PORT) : DEFAULT_PORT);
  return `http://${process.env.RBEE_HOST ?? DEFAULT_HOST}:${port}`;
}

/** The environment a woken node runs with: the keeper's own, with its --port carried over. */
function nodeEnv(options: CommonOptions): NodeJS.ProcessEnv {
  return options.port === undefined ? { ...process.env } : { ...process.env, RBEE_PORT: String(options.port) };
}

function outputFor(options: CommonOptions): Output {
  return createOutput({ json: options.json === true, stdout: process.stdout, stderr: process.stderr });
}

async function readPrompt(arg: string | undefined): Promise<string> {
  if (arg !== undefined && arg !== '-') return arg;
  if (arg === undefined && process.stdin.isTTY) {
    throw new RbeeError('PROMPT_MISSING', 'give a prompt as an argument, or pipe one in with `-`');
  }
  let text = '';
  try {
    text = readFileSync(0, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EAGAIN' && (error as NodeJS.ErrnoException).code !== 'EOF') {
      throw new RbeeError('PROMPT_MISSING', 'could not read a prompt from standard input', { cause: error });
    }
  }
  if (text.trim() === '') throw new RbeeError('PROMPT_MISSING', 'standard input gave no prompt (it was empty or closed)');
  return text;
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

function program(): Command {
  const root = new Command('rbee')
    .description('Turn every machine on your LAN into one private LLM inference cluster')
    .version(VERSION)
    .showHelpAfterError();

  const json = new Option('--json', 'machine-readable output (NDJSON for streams), no UI');
  const port = new Option('--port <port>', `the local node's HTTP port (env RBEE_PORT, default ${DEFAULT_PORT})`).argParser(
    intArg('--port', 0),
  );

  root
    .command('infer')
    .description('run a prompt on a model, waking the local node if it is asleep')
    .requiredOption('-m, --model <ref>', 'model: demo, hf:org/repo[:quant], hf:org/repo/file.gguf, https://…/x.gguf, or a path')
    .argument('[prompt]', 'the prompt; `-` or none reads standard input')
    .option('--max-tokens <n>', 'most tokens to generate', intArg('--max-tokens', 1))
    .option('--temperature <t>', 'sampling temperature (0 = greedy)', floatArg('--temperature', 0, 5))
    .option('--top-p <p>', 'nucleus sampling', floatArg('--top-p', 0, 1))
    .option('--top-k <k>', 'top-k sampling', intArg('--top-k', 0))
    .option('--seed <n>', 'random seed', intArg('--seed', 0))
    .option('--stop <text>', 'stop sequence (repeatable)', collect)
    .option('--system <text>', 'system prompt')
    .addOption(json)
    .addOption(port)
    .action(async (promptArg: string | undefined, opts: CommonOptions & Record<string, unknown>) => {
      const output = outputFor(opts);
      const prompt = await readPrompt(promptArg);
      const request: JobRequest = { model: resolveModelArg(String(opts.model)), prompt };
      for (const key of ['maxTokens', 'temperature', 'topP', 'topK', 'seed', 'stop', 'system'] as const) {
        if (opts[key] !== undefined) Object.assign(request, { [key]: opts[key] });
      }
      process.exitCode = await runInfer({
        client: createNodeClient({ url: nodeUrl(opts) }),
        output,
        request,
        wake: { mainScript: MAIN_SCRIPT, env: nodeEnv(opts), nodeLog: dataPaths(resolveDataDir()).nodeLog },
        signal: interruptSignal(),
      });
    });

  const node = root
    .command('node')
    .description('run this machine\'s node in the foreground (or start|stop|status it in the background)')
    .option('--host <host>', `address to listen on (env RBEE_HOST, default ${DEFAULT_HOST})`)
    .addOption(port)
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace (env RBEE_LOG_LEVEL)')
    .action(async (opts: { host?: string; port?: number; logLevel?: string }) => {
      const { loadNodeConfig } = await import('./node/config.js');
      const { startNode } = await import('./node/daemon.js');
      const config = loadNodeConfig({ host: opts.host, port: opts.port, logLevel: opts.logLevel });
      const running = await startNode(config, { foreground: process.stdin.isTTY });
      const stop = (signal: string): void => void running.close(`received ${signal}`);
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
      await running.closed;
      process.exit(0);
    });

  node
    .command('start')
    .description('start the node in the background')
    .addOption(json)
    .addOption(port)
    .action(async (opts: CommonOptions) => {
      const output = outputFor(opts);
      const awake = await ensureNodeAwake({
        client: createNodeClient({ url: nodeUrl(opts) }),
        mainScript: MAIN_SCRIPT,
        env: nodeEnv(opts),
        nodeLog: dataPaths(resolveDataDir()).nodeLog,
        narrate: (text) => output.narrate('keeper', text),
      });
      output.result(
        { ...awake.health, started: awake.woke },
        awake.woke ? `node started (pid ${awake.health.pid})` : `node already running (pid ${awake.health.pid})`,
      );
    });

  node
    .command('stop')
    .description('stop the background node and its workers')
    .addOption(json)
    .addOption(port)
    .action(async (opts: CommonOptions) => {
      const output = outputFor(opts);
      const client = createNodeClient({ url: nodeUrl(opts) });
      const health = await client.health();
      const { forced } = await stopNode(client, health.pid);
      output.result({ stopped: true, pid: health.pid, forced }, `node stopped (pid ${health.pid})`);
    });

  node
    .command('status')
    .description('is the node running?')
    .addOption(json)
    .addOption(port)
    .action(async (opts: CommonOptions) => {
      const output = outputFor(opts);
      const health = await createNodeClient({ url: nodeUrl(opts) }).health();
      output.result(health, `node ${health.node} ${health.state} (pid ${health.pid}, up ${health.uptimeS} s, v${health.version})`);
    });

  const models = root.command('models').description('models in this node\'s catalog');
  models
    .command('ls')
    .description('list models on disk')
    .addOption(json)
    .addOption(port)
    .action(async (opts: CommonOptions) => {
      const output = outputFor(opts);
      const { models: rows } = await createNodeClient({ url: nodeUrl(opts) }).get<{
        models: { id: string; bytes: number; quantization: string; name: string }[];
      }>('/v1/models');
      output.result(
        rows,
        rows.length === 0
          ? 'no models yet (try `rbee infer -m demo "hello"`)'
          : rows.map((m) => `${m.id}\t${(m.bytes / 2 ** 20).toFixed(1)} MiB\t${m.quantization}\t${m.name}`).join('\n'),
      );
    });

  return root;
}

/** A local path is made absolute here, since the node may run in another directory. */
function resolveModelArg(ref: string): string {
  if (ref.startsWith('./') || ref.startsWith('../') || (ref.endsWith('.gguf') && !ref.includes(':'))) {
    return resolve(ref);
  }
  return ref;
}

async function main(): Promise<void> {
  const cli = program();
  cli.exitOverride();
  const wantsJson = process.argv.includes('--json');
  try {
    await cli.parseAsync(process.argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.exitCode === 0) return; // --help, --version
      const rbee = new RbeeError('BAD_REQUEST', error.message.replace(/^error: /, ''));
      if (wantsJson) process.stdout.write(`${JSON.stringify({ type: 'error', ts: Date.now(), error: rbee.toJSON() })}\n`);
      process.exitCode = 2;
      return;
    }
    const output = createOutput({ json: wantsJson, stdout: process.stdout, stderr: process.stderr });
    process.exitCode = output.error(error).exitCode;
  }
}

void main();

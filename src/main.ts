#!/usr/bin/env node
/**
 * Composition root: argv → the keeper's subcommands (src/tui/cli), or `rbee node`, the daemon.
 * Native code (llama.cpp, SQLite) is loaded only by the daemon, through a dynamic import.
 */
import './shared/polyfill.js';
import { fileURLToPath } from 'node:url';
import { CommanderError } from 'commander';
import { RbeeError } from './shared/errors.js';
import { createKeeper } from './tui/cli/keeper.js';
import { createOutput } from './tui/cli/output.js';
import { createProgram, type NodeForegroundOptions } from './tui/cli/program.js';
import type { CommonOptions, Keeper } from './tui/cli/keeper.js';
import { ensureNodeAwake } from './node/client/index.js';

async function runNode(options: NodeForegroundOptions): Promise<void> {
  const { loadNodeConfig } = await import('./node/config.js');
  const { startNode } = await import('./node/daemon.js');
  const config = loadNodeConfig({
    host: options.host,
    port: options.port,
    logLevel: options.logLevel,
    peers: options.peer,
    mdns: options.mdns,
    clusterListen: options.clusterListen,
  });
  // A promise nobody awaited that fails (a peer's stream reset at a bad moment) must not take the
  // node, its workers and every client's stream down with it: it is logged, with its stack, and the
  // node keeps serving.
  process.on('unhandledRejection', (reason) => {
    const text = reason instanceof Error ? (reason.stack ?? reason.message) : String(reason);
    process.stderr.write(`rbee node: unhandled rejection (kept running): ${text}\n`);
  });
  const running = await startNode(config, { foreground: process.stderr.isTTY });
  // `on`, not `once`: signal-exit (in node-llama-cpp's and Ink's dependencies) re-raises a signal it
  // finds no other listener for, which killed the node in the middle of its shutdown. A second
  // signal while stopping ends the process at once. SIGHUP: the terminal of a foreground node closed.
  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) {
      process.stderr.write(`rbee node: ${signal} again while stopping; exiting now\n`);
      process.exit(1);
    }
    stopping = true;
    void running.close(`received ${signal}`);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  process.on('SIGHUP', stop);
  await running.closed;
  process.exit(0);
}

/** `rbee` alone: the full-screen dashboard, which wakes the local node and leaves it running. */
async function runDashboard(keeper: Keeper, options: CommonOptions): Promise<number> {
  // React's production build renders frames 1.5–2× faster (the node ignores NODE_ENV).
  process.env.NODE_ENV ??= 'production';
  const { runDashboard: run } = await import('./tui/dashboard/index.js');
  const client = keeper.client(options);
  return run({
    client,
    wake: ({ narrate, signal }) =>
      ensureNodeAwake({
        client,
        mainScript: keeper.mainScript,
        env: keeper.nodeEnv(options),
        nodeLog: keeper.nodeLog(),
        narrate,
        signal,
      }),
  });
}

async function main(): Promise<void> {
  const keeper = createKeeper({ mainScript: fileURLToPath(import.meta.url), env: process.env });
  const program = createProgram({
    keeper,
    runNode,
    runDashboard: (options) => runDashboard(keeper, options),
  });
  const wantsJson = process.argv.includes('--json');
  try {
    await program.parseAsync(process.argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.exitCode === 0) return; // --help, --version
      const rbee = new RbeeError('BAD_REQUEST', error.message.replace(/^error: /, ''));
      if (wantsJson)
        process.stdout.write(`${JSON.stringify({ type: 'error', ts: Date.now(), error: rbee.toJSON() })}\n`);
      process.exitCode = rbee.exitCode;
      return;
    }
    const output = createOutput({ json: wantsJson, stdout: process.stdout, stderr: process.stderr });
    process.exitCode = output.error(error).exitCode;
  }
}

void main();

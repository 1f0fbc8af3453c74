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

async function runNode(options: NodeForegroundOptions): Promise<void> {
  const { loadNodeConfig } = await import('./node/config.js');
  const { startNode } = await import('./node/daemon.js');
  const config = loadNodeConfig({ host: options.host, port: options.port, logLevel: options.logLevel });
  const running = await startNode(config, { foreground: process.stderr.isTTY });
  const stop = (signal: string): void => void running.close(`received ${signal}`);
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
  await running.closed;
  process.exit(0);
}

async function main(): Promise<void> {
  const keeper = createKeeper({ mainScript: fileURLToPath(import.meta.url), env: process.env });
  const program = createProgram({ keeper, runNode });
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

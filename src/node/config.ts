import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { z } from 'zod';
import { RbeeError } from '../shared/errors.js';
import { dataPaths, DEFAULT_HOST, DEFAULT_PORT, resolveDataDir, type DataPaths } from '../shared/paths.js';

const logLevelSchema = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

/** What `config.json` under the data directory may hold; flags and environment override it. */
const fileConfigSchema = z
  .object({
    host: z.string().optional(),
    port: z.number().int().min(0).max(65535).optional(),
    logLevel: logLevelSchema.optional(),
    nodeName: z.string().min(1).max(64).optional(),
    threads: z.number().int().positive().optional(),
    slots: z.number().int().positive().max(64).optional(),
    contextSize: z.number().int().positive().optional(),
    keepAliveS: z.number().int().min(-1).optional(),
    restart: z
      .object({
        failures: z.number().int().positive().optional(),
        windowS: z.number().positive().optional(),
        cooldownS: z.number().positive().optional(),
        baseDelayMs: z.number().int().min(0).optional(),
      })
      .strict()
      .optional(),
    heartbeatTimeoutMs: z.number().int().positive().optional(),
    minFreeRamBytes: z.number().int().min(0).optional(),
  })
  .strict();

export interface NodeConfig {
  paths: DataPaths;
  host: string;
  port: number;
  logLevel: z.infer<typeof logLevelSchema>;
  nodeName: string;
  /** Worker threads; undefined means the engine default (physical cores less one). */
  threads: number | undefined;
  /** Slots per worker. Defaults to 1 on CPU (FACTS: more slots do not raise CPU throughput). */
  slots: number;
  contextSize: number | undefined;
  /** Idle workers unload after this many seconds; -1 never, 0 right after the job. Defaults to 300. */
  keepAliveS: number;
  /** Restarts of crashed workers: `failures` within `windowS` open the breaker for `cooldownS`. */
  restart: { failures: number; windowS: number; cooldownS: number; baseDelayMs: number };
  /** A worker silent this long is unhealthy; twice this long, killed. Defaults to 5000. */
  heartbeatTimeoutMs: number;
  /** RAM that admission keeps free for everything else. Defaults to 512 MiB. */
  minFreeRamBytes: number;
}

export interface NodeConfigOverrides {
  dataDir?: string | undefined;
  host?: string | undefined;
  port?: number | undefined;
  logLevel?: string | undefined;
}

function parsePort(value: string | undefined, source: string): number | undefined {
  if (value === undefined || value === '') return undefined;
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RbeeError('CONFIG_INVALID', `${source} must be a port number (0–65535), got "${value}"`);
  }
  return port;
}

/** Resolves the node's configuration: flags, then environment, then config.json, then defaults. */
export function loadNodeConfig(
  overrides: NodeConfigOverrides = {},
  env: NodeJS.ProcessEnv = process.env,
): NodeConfig {
  const paths = dataPaths(overrides.dataDir ?? resolveDataDir(env));
  let file: z.infer<typeof fileConfigSchema> = {};
  if (existsSync(paths.config)) {
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(paths.config, 'utf8'));
    } catch (error) {
      throw new RbeeError('CONFIG_INVALID', `${paths.config} is not valid JSON`, { cause: error });
    }
    const parsed = fileConfigSchema.safeParse(raw);
    if (!parsed.success) {
      throw new RbeeError('CONFIG_INVALID', `${paths.config}: ${z.prettifyError(parsed.error)}`);
    }
    file = parsed.data;
  }
  const level = overrides.logLevel ?? env.RBEE_LOG_LEVEL ?? file.logLevel ?? 'info';
  const logLevel = logLevelSchema.safeParse(level);
  if (!logLevel.success) {
    throw new RbeeError('CONFIG_INVALID', `log level must be one of ${logLevelSchema.options.join(', ')}`);
  }
  return {
    paths,
    host: overrides.host ?? env.RBEE_HOST ?? file.host ?? DEFAULT_HOST,
    port: overrides.port ?? parsePort(env.RBEE_PORT, 'RBEE_PORT') ?? file.port ?? DEFAULT_PORT,
    logLevel: logLevel.data,
    nodeName: file.nodeName ?? hostname(),
    threads: file.threads,
    slots: file.slots ?? 1,
    contextSize: file.contextSize,
    keepAliveS: file.keepAliveS ?? 300,
    restart: {
      failures: file.restart?.failures ?? 3,
      windowS: file.restart?.windowS ?? 60,
      cooldownS: file.restart?.cooldownS ?? 60,
      baseDelayMs: file.restart?.baseDelayMs ?? 500,
    },
    heartbeatTimeoutMs: file.heartbeatTimeoutMs ?? 5_000,
    minFreeRamBytes: file.minFreeRamBytes ?? 512 * 2 ** 20,
  };
}

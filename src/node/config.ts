import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { multiaddr } from '@multiformats/multiaddr';
import { z } from 'zod';
import { RbeeError } from '../shared/errors.js';
import { assertMdnsAllowed } from '../shared/mdns-guard.js';
import {
  dataPaths,
  DEFAULT_CLUSTER_PORT,
  DEFAULT_HOST,
  DEFAULT_PORT,
  resolveDataDir,
  type DataPaths,
} from '../shared/paths.js';

const logLevelSchema = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);
const backendSchema = z.enum(['auto', 'cpu', 'cuda', 'vulkan', 'metal']);
export type BackendSetting = z.infer<typeof backendSchema>;

/** What `config.json` under the data directory may hold; flags and environment override it. */
const fileConfigSchema = z
  .object({
    host: z.string().optional(),
    port: z.number().int().min(0).max(65535).optional(),
    auth: z.enum(['remote', 'always']).optional(),
    allowedHosts: z.array(z.string()).optional(),
    allowedOrigins: z.array(z.string()).optional(),
    remoteModelRefs: z.enum(['catalog-hf', 'any']).optional(),
    logLevel: logLevelSchema.optional(),
    nodeName: z.string().min(1).max(64).optional(),
    threads: z.number().int().positive().optional(),
    backend: backendSchema.optional(),
    slots: z.number().int().positive().max(64).optional(),
    contextSize: z.number().int().positive().optional(),
    prefixReuse: z.boolean().optional(),
    flashAttention: z.boolean().optional(),
    keepAliveS: z.number().int().min(-1).optional(),
    engineBuild: z.enum(['idle', 'off']).optional(),
    engineBuildIdleS: z.number().positive().optional(),
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
    maxConnections: z.number().int().positive().optional(),
    maxQueued: z.number().int().min(0).optional(),
    maxModelReads: z.number().int().positive().optional(),
    modelServeBytesPerSecond: z.number().int().positive().optional(),
    keyLimits: z
      .object({
        maxConcurrent: z.number().int().positive().optional(),
        rpm: z.number().int().positive().optional(),
      })
      .strict()
      .optional(),
    cluster: z
      .object({
        enabled: z.boolean().optional(),
        listen: z.array(z.string()).optional(),
        mdns: z.boolean().optional(),
        peers: z.array(z.string()).optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

/** How this node meets the others. */
export interface ClusterConfig {
  /** False runs a hive alone, with no p2p host at all (RBEE_CLUSTER=0). */
  enabled: boolean;
  /** libp2p listen multiaddrs. Defaults to all interfaces on port 7834. */
  listen: string[];
  /** Multicast discovery on the LAN. Defaults to on; RBEE_MDNS=0 / --no-mdns turn it off. */
  mdns: boolean;
  /** Static peers (multiaddrs) for networks where multicast is blocked. */
  peers: string[];
}

export interface NodeConfig {
  paths: DataPaths;
  host: string;
  port: number;
  /**
   * Who needs an API key: clients beyond this machine (`remote`, the default), or every client
   * (`always`, e.g. on a shared machine). Env RBEE_AUTH.
   */
  auth: 'remote' | 'always';
  /**
   * Host names (besides localhost, the loopback addresses and the listen address) that clients may
   * address this node by, e.g. `rbee.lan` behind a 0.0.0.0 bind. Env RBEE_ALLOWED_HOSTS. Lower case,
   * no port.
   */
  allowedHosts: string[];
  /** Web origins (`https://app.example`) whose pages may call the API. Defaults to none. */
  allowedOrigins: string[];
  /**
   * Which model refs clients beyond this machine may name: catalog models, `demo` and `hf:` refs
   * (`catalog-hf`, the default), or also URLs and paths on this machine (`any`).
   */
  remoteModelRefs: 'catalog-hf' | 'any';
  logLevel: z.infer<typeof logLevelSchema>;
  nodeName: string;
  /** Worker threads; undefined means the engine default (physical cores less one). */
  threads: number | undefined;
  /**
   * Which backend workers use: `auto` (every one found: CUDA, then Vulkan, then Metal, then the CPU)
   * or only this one, with the CPU as the fallback (`cpu`: never a GPU). Env RBEE_BACKEND.
   */
  backend: BackendSetting;
  /** Slots per worker. Defaults to 1 on CPU (on the CPU more slots do not raise throughput: the threads are shared). */
  slots: number;
  contextSize: number | undefined;
  /**
   * Workers keep each slot's KV cache and reuse the part a new prompt shares with it (a chat's next
   * turn skips its history's prompt processing). Off, every prompt is evaluated in full. Default on.
   */
  prefixReuse: boolean;
  /**
   * Flash attention in workers' contexts: true on every device, false on none. Absent (the default):
   * off on the CPU, llama.cpp's choice on a GPU. On the CPU it generates faster once the context is
   * large (its KV cache is read in order; docs/benchmarks.md), but a prompt evaluated in batches of
   * other sizes (a slot's kept prefix, a stream continued on another worker) gives slightly other
   * logits, so a seeded or greedy answer may differ from a fresh run's.
   */
  flashAttention: boolean | undefined;
  /** Idle workers unload after this many seconds; -1 never, 0 right after the job. Defaults to 300. */
  keepAliveS: number;
  /**
   * `idle` (the default): at the node's first idle moment, when no decision exists yet for the
   * llama.cpp release node-llama-cpp bundles, the node builds llama.cpp for this CPU and measures it
   * (what `rbee doctor --fix` does), niced, narrated and cancelled by the next job. `off`: only
   * `rbee doctor --fix` builds it. Env RBEE_ENGINE_BUILD.
   */
  engineBuild: 'idle' | 'off';
  /**
   * Seconds with no job running or queued, no download and no worker generating before the idle
   * build starts. Defaults to 600. Env RBEE_ENGINE_BUILD_IDLE_S.
   */
  engineBuildIdleS: number;
  /** Restarts of crashed workers: `failures` within `windowS` open the breaker for `cooldownS`. */
  restart: { failures: number; windowS: number; cooldownS: number; baseDelayMs: number };
  /** A worker silent this long is unhealthy; twice this long, killed. Defaults to 5000. */
  heartbeatTimeoutMs: number;
  /** RAM that admission keeps free for everything else. Defaults to 512 MiB. */
  minFreeRamBytes: number;
  /**
   * Jobs that may wait in this node's placement queue while it is queen (or alone) for a slot or
   * for room; one more is refused with QUEUE_FULL (HTTP 429). Env RBEE_MAX_QUEUED.
   */
  maxQueued: number;
  /**
   * Model files this hive sends to other hives of the cluster at once; more wait their turn.
   * Defaults to 4. Env RBEE_MAX_MODEL_READS.
   */
  maxModelReads: number;
  /**
   * Bytes per second this hive sends model files to other hives at, all reads together; unlimited
   * when unset. Env RBEE_MODEL_SERVE_BPS.
   */
  modelServeBytesPerSecond: number | undefined;
  /** HTTP connections served at once; more are answered 503 TOO_MANY_CONNECTIONS. Defaults to 1024. */
  maxConnections: number;
  /**
   * Limits of API keys that were created without their own (`rbee keys create --max-concurrent N
   * --rpm N`): jobs at once and model requests per minute, on this node. None by default.
   */
  keyLimits: { maxConcurrent?: number; rpm?: number };
  cluster: ClusterConfig;
}

export interface NodeConfigOverrides {
  dataDir?: string | undefined;
  host?: string | undefined;
  port?: number | undefined;
  logLevel?: string | undefined;
  /** `--peer` (repeatable): added to the configured static peers. */
  peers?: string[] | undefined;
  /** `--mdns` / `--no-mdns`. */
  mdns?: boolean | undefined;
  /** `--cluster-listen` (repeatable): replaces the listen addresses. */
  clusterListen?: string[] | undefined;
}

function parseSwitch(value: string | undefined, name: string): boolean | undefined {
  if (value === undefined || value === '') return undefined;
  if (['1', 'true', 'on', 'yes'].includes(value.toLowerCase())) return true;
  if (['0', 'false', 'off', 'no'].includes(value.toLowerCase())) return false;
  throw new RbeeError('CONFIG_INVALID', `${name} must be 0 or 1, got "${value}"`);
}

function parseList(value: string | undefined): string[] | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  return value.split(/[\s,]+/).filter((item) => item !== '');
}

/** A DNS name: labels of letters, digits and inner hyphens. */
const HOST_NAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

function checkHosts(hosts: string[], source: string): string[] {
  return hosts.map((entry) => {
    const host = entry
      .trim()
      .toLowerCase()
      .replace(/^\[(.*)\]$/, '$1');
    if (!HOST_NAME.test(host) && isIP(host) === 0) {
      throw new RbeeError(
        'CONFIG_INVALID',
        `${source}: "${entry}" is not a host name or IP address (give it without a port, e.g. rbee.lan)`,
      );
    }
    return host;
  });
}

function checkOrigins(origins: string[], source: string): string[] {
  return origins.map((entry) => {
    let url: URL | undefined;
    try {
      url = new URL(entry);
    } catch {
      url = undefined;
    }
    // an origin is scheme, host and port only: anything more would never match a browser's Origin
    if (
      url === undefined ||
      (url.protocol !== 'http:' && url.protocol !== 'https:') ||
      url.origin !== entry.replace(/\/$/, '').toLowerCase()
    ) {
      throw new RbeeError(
        'CONFIG_INVALID',
        `${source}: "${entry}" is not a web origin (expected e.g. https://app.example or http://localhost:3000)`,
      );
    }
    return url.origin;
  });
}

function checkMultiaddrs(addrs: string[], source: string): string[] {
  for (const addr of addrs) {
    try {
      multiaddr(addr);
    } catch {
      throw new RbeeError(
        'CONFIG_INVALID',
        `${source}: "${addr}" is not a multiaddr (expected e.g. /ip4/192.168.1.20/tcp/7834)`,
      );
    }
  }
  return addrs;
}

function loadClusterConfig(
  file: z.infer<typeof fileConfigSchema>['cluster'] = {},
  overrides: NodeConfigOverrides,
  env: NodeJS.ProcessEnv,
): ClusterConfig {
  const listen = overrides.clusterListen ??
    parseList(env.RBEE_CLUSTER_LISTEN) ??
    file.listen ?? [`/ip4/0.0.0.0/tcp/${DEFAULT_CLUSTER_PORT}`];
  const peers = [...(file.peers ?? []), ...(parseList(env.RBEE_PEERS) ?? []), ...(overrides.peers ?? [])];
  const enabled = parseSwitch(env.RBEE_CLUSTER, 'RBEE_CLUSTER') ?? file.enabled ?? true;
  const mdns = overrides.mdns ?? parseSwitch(env.RBEE_MDNS, 'RBEE_MDNS') ?? file.mdns ?? true;
  // the guard reads process.env, never `env`: a caller's own environment cannot switch it off
  if (enabled && mdns) assertMdnsAllowed();
  return {
    enabled,
    listen: checkMultiaddrs(listen, 'cluster listen address'),
    mdns,
    peers: checkMultiaddrs([...new Set(peers)], 'static peer'),
  };
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
  const backendInput =
    env.RBEE_BACKEND === undefined || env.RBEE_BACKEND === '' ? undefined : env.RBEE_BACKEND;
  const backend = backendSchema.safeParse(backendInput ?? file.backend ?? 'auto');
  if (!backend.success) {
    throw new RbeeError(
      'CONFIG_INVALID',
      `RBEE_BACKEND must be one of ${backendSchema.options.join(', ')}, not ${backendInput ?? ''}`,
    );
  }
  const engineBuildInput =
    env.RBEE_ENGINE_BUILD === undefined || env.RBEE_ENGINE_BUILD === '' ? undefined : env.RBEE_ENGINE_BUILD;
  const engineBuild = engineBuildInput ?? file.engineBuild ?? 'idle';
  if (engineBuild !== 'idle' && engineBuild !== 'off') {
    throw new RbeeError('CONFIG_INVALID', `RBEE_ENGINE_BUILD must be idle or off, not ${engineBuild}`);
  }
  const auth = env.RBEE_AUTH === undefined || env.RBEE_AUTH === '' ? (file.auth ?? 'remote') : env.RBEE_AUTH;
  if (auth !== 'remote' && auth !== 'always') {
    throw new RbeeError('CONFIG_INVALID', `RBEE_AUTH must be remote or always, not ${auth}`);
  }
  return {
    paths,
    host: overrides.host ?? env.RBEE_HOST ?? file.host ?? DEFAULT_HOST,
    auth,
    allowedHosts: checkHosts(
      parseList(env.RBEE_ALLOWED_HOSTS) ?? file.allowedHosts ?? [],
      'allowed hosts (RBEE_ALLOWED_HOSTS or allowedHosts)',
    ),
    allowedOrigins: checkOrigins(file.allowedOrigins ?? [], `${paths.config}: allowedOrigins`),
    remoteModelRefs: file.remoteModelRefs ?? 'catalog-hf',
    port: overrides.port ?? parsePort(env.RBEE_PORT, 'RBEE_PORT') ?? file.port ?? DEFAULT_PORT,
    logLevel: logLevel.data,
    nodeName: file.nodeName ?? hostname(),
    threads: file.threads,
    backend: backend.data,
    slots: file.slots ?? 1,
    contextSize: file.contextSize,
    prefixReuse: file.prefixReuse ?? true,
    flashAttention: file.flashAttention,
    keepAliveS: file.keepAliveS ?? 300,
    engineBuild,
    engineBuildIdleS:
      positiveSeconds(env.RBEE_ENGINE_BUILD_IDLE_S, 'RBEE_ENGINE_BUILD_IDLE_S') ??
      file.engineBuildIdleS ??
      600,
    restart: {
      failures: file.restart?.failures ?? 3,
      windowS: file.restart?.windowS ?? 60,
      cooldownS: file.restart?.cooldownS ?? 60,
      baseDelayMs: file.restart?.baseDelayMs ?? 500,
    },
    heartbeatTimeoutMs: file.heartbeatTimeoutMs ?? 5_000,
    minFreeRamBytes: file.minFreeRamBytes ?? 512 * 2 ** 20,
    maxConnections: file.maxConnections ?? 1024,
    maxQueued: parseCount(env.RBEE_MAX_QUEUED, 'RBEE_MAX_QUEUED') ?? file.maxQueued ?? 256,
    maxModelReads:
      positive(parseCount(env.RBEE_MAX_MODEL_READS, 'RBEE_MAX_MODEL_READS'), 'RBEE_MAX_MODEL_READS') ??
      file.maxModelReads ??
      4,
    modelServeBytesPerSecond:
      positive(parseCount(env.RBEE_MODEL_SERVE_BPS, 'RBEE_MODEL_SERVE_BPS'), 'RBEE_MODEL_SERVE_BPS') ??
      file.modelServeBytesPerSecond,
    keyLimits: file.keyLimits ?? {},
    cluster: loadClusterConfig(file.cluster, overrides, env),
  };
}
function positive(count: number | undefined, source: string): number | undefined {
  if (count === 0) throw new RbeeError('CONFIG_INVALID', `${source} must be 1 or more`);
  return count;
}

function positiveSeconds(value: string | undefined, source: string): number | undefined {
  if (value === undefined || value === '') return undefined;
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds <= 0) {
    throw new RbeeError('CONFIG_INVALID', `${source} must be a number of seconds above 0, got "${value}"`);
  }
  return seconds;
}

function parseCount(value: string | undefined, source: string): number | undefined {
  if (value === undefined || value === '') return undefined;
  const count = Number(value);
  if (!Number.isInteger(count) || count < 0) {
    throw new RbeeError('CONFIG_INVALID', `${source} must be a whole number (0 or more), got "${value}"`);
  }
  return count;
}

function parsePort(value: string | undefined, source: string): number | undefined {
  if (value === undefined || value === '') return undefined;
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RbeeError('CONFIG_INVALID', `${source} must be a port number (0–65535), got "${value}"`);
  }
  return port;
}

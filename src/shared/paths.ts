import { homedir } from 'node:os';
import { join } from 'node:path';

export const DEFAULT_PORT = 7833;
export const DEFAULT_HOST = '127.0.0.1';
/** Where nodes listen for each other (libp2p over TCP, all interfaces: peers are on the LAN). */
export const DEFAULT_CLUSTER_PORT = 7834;

/** The data directory: `RBEE_HOME`, else `$XDG_DATA_HOME/rbee`, else `~/.local/share/rbee`. */
export function resolveDataDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.RBEE_HOME !== undefined && env.RBEE_HOME !== '') return env.RBEE_HOME;
  const xdg = env.XDG_DATA_HOME;
  return join(xdg !== undefined && xdg !== '' ? xdg : join(homedir(), '.local', 'share'), 'rbee');
}

/** Everything a node keeps on disk, under one data directory. */
export interface DataPaths {
  root: string;
  models: string;
  db: string;
  logs: string;
  nodeLog: string;
  pidFile: string;
  config: string;
  /** This node's identity (libp2p private key): the same peer id as long as this file stays. */
  peerKey: string;
  /** The cluster's pre-shared key: only nodes holding it can connect. */
  clusterKey: string;
  /** Which llama.cpp binary CPU workers load, with the figures that decided (`rbee doctor --fix`). */
  binaryDecision: string;
  /** What `rbee doctor --fix` measures with (a generated model), kept between runs. */
  engineDir: string;
}

export function dataPaths(root: string): DataPaths {
  return {
    root,
    models: join(root, 'models'),
    db: join(root, 'rbee.db'),
    logs: join(root, 'logs'),
    nodeLog: join(root, 'logs', 'node.log'),
    pidFile: join(root, 'node.pid'),
    config: join(root, 'config.json'),
    peerKey: join(root, 'peer.key'),
    clusterKey: join(root, 'cluster.key'),
    binaryDecision: join(root, 'engine', 'binary.json'),
    engineDir: join(root, 'engine'),
  };
}

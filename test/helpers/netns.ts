/**
 * A private LAN on this machine for cluster tests and benchmarks: one network namespace holding a
 * bridge, and one namespace per host, joined to the bridge by a veth pair, with a 10.77.0.x address
 * and the multicast route mDNS needs (without it mDNS sends fail silently). Nothing is linked to the
 * machine's own interfaces, and `destroy()` deletes every namespace this lab made (their links go
 * with them). Needs root and iproute2; `netnsSupport()` says why not otherwise.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface NetnsSupport {
  ok: boolean;
  reason: string;
}

/** Whether this process may create network namespaces (tries one and deletes it). */
export function netnsSupport(): NetnsSupport {
  if (process.platform !== 'linux') return { ok: false, reason: 'network namespaces need Linux' };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'creating network namespaces needs root' };
  const probe = `rbprobe${randomBytes(3).toString('hex')}`;
  try {
    execFileSync('ip', ['netns', 'add', probe], { stdio: 'pipe' });
    execFileSync('ip', ['netns', 'del', probe], { stdio: 'pipe' });
    return { ok: true, reason: '' };
  } catch (error) {
    return { ok: false, reason: `ip netns add failed: ${(error as Error).message.split('\n')[0]}` };
  }
}

export interface LabHost {
  /** The namespace's name. */
  ns: string;
  ip: string;
  /** The bridge side of this host's veth pair (in the bridge namespace). */
  port: string;
}

export interface NetLab {
  hosts: LabHost[];
  /** Adds one more host to the LAN. */
  addHost(): Promise<LabHost>;
  /** Runs a command inside a host's namespace. */
  exec(host: LabHost, argv: string[], options?: { timeoutMs?: number }): Promise<string>;
  /** Starts a long-running command inside a host's namespace (`ip netns exec` execs it: same pid). */
  spawn(host: LabHost, argv: string[], env: NodeJS.ProcessEnv): ChildProcess;
  /** Cuts a host off the LAN (its bridge port goes down; its own link stays up, as on a real switch). */
  partition(host: LabHost): Promise<void>;
  /** Reconnects it and restores the multicast route. */
  heal(host: LabHost): Promise<void>;
  destroy(): Promise<void>;
}

const SUBNET = '10.77.0';

async function ip(args: string[]): Promise<void> {
  await run('ip', args, { timeout: 10_000 });
}

export async function createNetLab(hostCount: number): Promise<NetLab> {
  const id = randomBytes(2).toString('hex');
  const bridgeNs = `rb${id}-lan`;
  const made: string[] = [];
  const hosts: LabHost[] = [];

  const inBridge = (args: string[]): Promise<void> => ip(['netns', 'exec', bridgeNs, 'ip', ...args]);

  const lab: NetLab = {
    hosts,
    async addHost() {
      const n = hosts.length + 1;
      const host: LabHost = { ns: `rb${id}-h${n}`, ip: `${SUBNET}.${10 + n}`, port: `rb${id}p${n}` };
      await ip(['netns', 'add', host.ns]);
      made.push(host.ns);
      // both ends are created inside namespaces: the host's own interfaces are never touched
      await inBridge(['link', 'add', host.port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host.ns]);
      await inBridge(['link', 'set', host.port, 'master', 'br0', 'up']);
      const inHost = (args: string[]): Promise<void> => ip(['netns', 'exec', host.ns, 'ip', ...args]);
      await inHost(['link', 'set', 'lo', 'up']);
      await inHost(['addr', 'add', `${host.ip}/24`, 'dev', 'eth0']);
      await inHost(['link', 'set', 'eth0', 'up']);
      await inHost(['route', 'replace', '224.0.0.0/4', 'dev', 'eth0']);
      hosts.push(host);
      return host;
    },
    async exec(host, argv, options = {}) {
      const [command, ...args] = argv;
      const { stdout } = await run('ip', ['netns', 'exec', host.ns, command ?? 'true', ...args], {
        timeout: options.timeoutMs ?? 10_000,
        maxBuffer: 16 * 2 ** 20,
      });
      return stdout;
    },
    spawn(host, argv, env) {
      return spawn('ip', ['netns', 'exec', host.ns, ...argv], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    },
    async partition(host) {
      await inBridge(['link', 'set', host.port, 'down']);
    },
    async heal(host) {
      await inBridge(['link', 'set', host.port, 'up']);
      await ip(['netns', 'exec', host.ns, 'ip', 'route', 'replace', '224.0.0.0/4', 'dev', 'eth0']);
    },
    async destroy() {
      for (const ns of made.splice(0).reverse()) await ip(['netns', 'del', ns]).catch(() => undefined);
    },
  };

  try {
    await ip(['netns', 'add', bridgeNs]);
    made.push(bridgeNs);
    await inBridge(['link', 'set', 'lo', 'up']);
    // no multicast snooping: the bridge floods mDNS like a plain home switch
    await inBridge(['link', 'add', 'br0', 'type', 'bridge', 'mcast_snooping', '0']);
    await inBridge(['link', 'set', 'br0', 'up']);
    for (let i = 0; i < hostCount; i++) await lab.addHost();
  } catch (error) {
    await lab.destroy();
    throw error;
  }
  return lab;
}

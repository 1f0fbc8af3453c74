/**
 * `npm run bench:tui`: what the dashboard costs while the tiny model streams at full speed.
 *
 * A real node and a real dashboard (`rbee` in tmux, CI unset so Ink draws live frames). The same
 * chat prompt runs (1) through the HTTP API, streamed over SSE to a plain client — the baseline — and (2) typed
 * into the dashboard's chat, which renders every token. Printed: the dashboard process's CPU use
 * while streaming (share of one core), the job's own tok/s with and without the dashboard, and the
 * tok/s the dashboard showed vs the job's. Repeated BENCH_REPEATS times (default 5); medians.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { loneNodeEnv } from '../test/helpers/cli.js';

const REPO = resolve(import.meta.dirname, '..');
const CLI = join(REPO, 'dist', 'main.js');
const REPEATS = Number(process.env.BENCH_REPEATS ?? 5);
const TOKENS = 1500;
const PROMPT = 'Stream as fast as you can';
const TICKS_PER_S = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());

if (spawnSync('tmux', ['-V']).status !== 0) throw new Error('bench:tui needs tmux');

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const cpuTicks = (pid: number): number => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(fields[11]) + Number(fields[12]); // utime + stime
};
async function until<T>(
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  what: string,
): Promise<T> {
  for (let i = 0; i < 1200; i++) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

const home = mkdtempSync(join(tmpdir(), 'rbee-bench-tui-'));
// One slot and no unloading, so every run streams on the same warm worker.
writeFileSync(join(home, 'config.json'), JSON.stringify({ keepAliveS: -1, slots: 1 }));
const port = 20000 + Math.floor(Math.random() * 20000);
const url = `http://127.0.0.1:${port}`;
const env = loneNodeEnv(home, port, 'warn');
delete env.CI;
const node = spawn(process.execPath, [CLI, 'node'], { env, stdio: 'ignore' });
const session = `rbee-bench-tui-${process.pid}`;
const tmux = (...args: string[]): string => execFileSync('tmux', args, { encoding: 'utf8' });
const screen = (): string => tmux('capture-pane', '-t', session, '-p');

interface JobView {
  id: string;
  state: string;
  tokensPerSecond?: number;
  completionTokens?: number;
}
const jobs = async (): Promise<JobView[]> =>
  ((await (await fetch(`${url}/v1/jobs`)).json()) as { jobs: JobView[] }).jobs;

/** The baseline: the same job streamed over SSE to a plain client that only reads it. */
async function apiRun(): Promise<number> {
  const res = await fetch(`${url}/v1/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'demo', prompt: PROMPT, maxTokens: TOKENS, temperature: 0 }),
  });
  const { id } = (await res.json()) as { id: string };
  const events = await fetch(`${url}/v1/jobs/${id}/events`);
  for await (const _chunk of events.body as unknown as AsyncIterable<Uint8Array>) {
    // read to the end, as any client does
  }
  const job = await until(
    async () => (await jobs()).find((j) => j.id === id && j.state === 'done'),
    'the API job',
  );
  return job.tokensPerSecond ?? 0;
}

try {
  await until(async () => (await fetch(`${url}/health`).catch(() => undefined))?.ok, 'the node');
  await fetch(`${url}/v1/workers`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'demo' }),
  });
  await apiRun(); // warm-up

  tmux(
    'new-session',
    '-d',
    '-s',
    session,
    '-x',
    '120',
    '-y',
    '40',
    '-e',
    `RBEE_HOME=${home}`,
    '-e',
    `RBEE_PORT=${port}`,
    '-e',
    'RBEE_ENGINE_BUILD=off',
    // BENCH_CPU_PROF=DIR writes the dashboard's V8 CPU profile there (on quit), to see where it spends
    `exec env -u CI '${process.execPath}' ${process.env.BENCH_CPU_PROF ? `--cpu-prof --cpu-prof-dir='${process.env.BENCH_CPU_PROF}' ` : ''}'${CLI}'`,
  );
  const dashboardPid = Number(tmux('display-message', '-p', '-t', session, '#{pane_pid}').trim());
  await until(() => screen().includes('● live'), 'the dashboard');
  const press = (key: string): void => void tmux('send-keys', '-t', session, key);
  press('5');
  await until(() => screen().includes('Enter send'), 'the chat input');
  press('Escape');
  await until(() => screen().includes('m types a ref'), 'the model picker');
  press('m');
  await until(() => screen().includes('Chat with model'), 'the model prompt');
  tmux('send-keys', '-t', session, '-l', 'demo');
  press('Enter');
  await until(() => screen().includes('model demo'), 'the model');

  const without: number[] = [];
  const withDashboard: number[] = [];
  const shown: number[] = [];
  const cpu: number[] = [];
  for (let r = 0; r < REPEATS; r++) {
    without.push(await apiRun());
    const before = (await jobs()).length;
    tmux('send-keys', '-t', session, '-l', `${PROMPT} ${r}`);
    const t0 = performance.now();
    const ticks0 = cpuTicks(dashboardPid);
    press('Enter');
    const job = await until(
      async () => (await jobs()).slice(before).find((j) => j.state === 'done'),
      'the chat job to finish',
    );
    // The chat's summary line, "N tokens · X tok/s · TTFT …", appears once the dashboard has it all.
    const summary = await until(() => {
      const lines = [...screen().matchAll(/(\d+) tokens · ([\d.]+) tok\/s/g)];
      const last = lines.at(-1);
      return last !== undefined && Number(last[1]) === job.completionTokens ? last : undefined;
    }, 'the chat summary');
    const seconds = (performance.now() - t0) / 1000;
    cpu.push((cpuTicks(dashboardPid) - ticks0) / TICKS_PER_S / seconds);
    withDashboard.push(job.tokensPerSecond ?? 0);
    shown.push(Number(summary[2]));
    press('Escape');
    await until(() => screen().includes('m types a ref'), 'leaving the input');
    press('i');
  }
  const a = median(without);
  const b = median(withDashboard);
  console.log(`# bench:tui — tiny model, ${TOKENS} tokens, ${REPEATS} repeats, tmux 120×40`);
  console.log('\n| measure | median |');
  console.log('|---|---|');
  console.log(`| job tok/s, streamed to a plain SSE client | ${a.toFixed(1)} |`);
  console.log(`| job tok/s, streamed into the dashboard's chat | ${b.toFixed(1)} |`);
  console.log(`| tok/s the dashboard showed | ${median(shown).toFixed(1)} |`);
  console.log(`| dashboard CPU while streaming (share of one core) | ${median(cpu).toFixed(3)} |`);
  console.log(
    `\nratios: job tok/s with/without dashboard ${(b / a).toFixed(3)}; shown/true ${(median(shown) / b).toFixed(3)}; ` +
      `target: CPU < 0.25 of a core (${median(cpu) < 0.25 ? 'met' : 'not met'})`,
  );
} finally {
  // quit first, so that the dashboard exits cleanly (and writes its profile when asked to)
  spawnSync('tmux', ['send-keys', '-t', session, 'Escape']);
  spawnSync('tmux', ['send-keys', '-t', session, 'q']);
  await sleep(1500);
  spawnSync('tmux', ['kill-session', '-t', session]);
  await fetch(`${url}/v1/shutdown`, { method: 'POST', headers: { 'x-rbee-client': '1' } }).catch(
    () => undefined,
  );
  await new Promise((res) => (node.exitCode === null ? node.once('exit', res) : res(undefined)));
  rmSync(home, { recursive: true, force: true });
}

/**
 * `npm run bench:lan-models`: how fast a model crosses the LAN from one hive to another, against a
 * plain HTTP download of the same file between the same two hosts.
 *
 * Three real nodes, n1 n2 n3, each in its own network namespace on a private bridge
 * (test/helpers/netns.ts), mDNS as discovery. A ~650 MB model (the small preset with f32 weights,
 * the generated size nearest 500 MB; BENCH_MODEL_TYPE=f16 gives ~330 MB) is served by a bare
 * node:http server in n1's namespace; n1 pulls it from there, so n1 holds it. Then, interleaved,
 * BENCH_REPEATS rounds (default 3), medians:
 *
 *   (A) n2 pulls it from n1 over rbee (`POST /v1/models/pull` with `from: n1`, the request
 *       `rbee models pull URL --from n1` makes), timed at a client in n2's namespace from the
 *       request to the `done` event that carries the catalog row;
 *   (B) a plain HTTP download of the same file from that server in n1's namespace by a client in
 *       n2's, written to a file on the same disk as n2's models (chunk by chunk, fsync at the end).
 *
 * Each pulled copy is deleted before the next round. A/B is the share of a bare download's speed
 * rbee keeps while it encrypts the stream (cluster key, noise), frames it, hashes it and syncs it.
 *
 * (C) two holders: n3 gets a copy too, and n2 pulls it without `from`. That row is measured only
 * when one pull takes bytes from both n1 and n3 (the hives' logs say who sent what); a build that
 * takes a file from one holder at a time prints why it is left out.
 *
 * (D) serving and generating at once: a generation on n1 (the holder, one worker on the model it
 * serves) alone, and while n2 pulls the model from n1, interleaved, BENCH_REPEATS each; the ratio
 * of the medians' tokens per second is what a holder's users notice of the serving.
 *
 * Needs root (network namespaces); exits 2 saying why otherwise. Everything shares this machine's
 * cores: the figures are for nodes, clients and encryption all on one host. BENCH_PIN=1 gives each
 * end a core of its own, as two machines would: n1, n3 and the file server (and their workers) on
 * CPU 0, n2 and the clients in its namespace on CPU 1 (`taskset`; (A) and (B) alike).
 */
import '../src/shared/polyfill.js';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { generateTestModel, type GgmlType } from '../src/engine/gguf/index.js';
import { createClusterLab, type ClusterLab, type LabNode } from '../test/helpers/cluster-lab.js';
import { serveFileIn, type LabFileServer } from '../test/helpers/lab-http.js';
import { netnsSupport } from '../test/helpers/netns.js';
import { TEST_MODELS_DIR } from '../test/helpers/tiny-model.js';
import { waitFor } from '../test/helpers/wait-for.js';

const REPEATS = Number(process.env.BENCH_REPEATS ?? 3);
const WEIGHT_TYPE = (process.env.BENCH_MODEL_TYPE ?? 'f32') as GgmlType;
const API = 'http://127.0.0.1:7833';
const PIN = process.env.BENCH_PIN === '1';

/** A client of n2's node in n2's namespace: one pull, timed from the request to `done`. */
const PULL_CLIENT = String.raw`
(async () => {
  const [api, body] = process.argv.slice(1);
  const started = performance.now();
  const response = await fetch(api + '/v1/models/pull', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
  });
  if (!response.ok) throw new Error('HTTP ' + response.status + ': ' + (await response.text()));
  const decoder = new TextDecoder();
  let text = '';
  let done;
  for await (const chunk of response.body) {
    text += decoder.decode(chunk, { stream: true });
    let end;
    while ((end = text.indexOf('\n\n')) !== -1) {
      const block = text.slice(0, end);
      text = text.slice(end + 2);
      const data = block.split('\n').find((line) => line.startsWith('data: '));
      if (data === undefined) continue;
      const event = JSON.parse(data.slice(6));
      if (event.type === 'error') throw new Error(event.error.code + ': ' + event.error.message);
      if (event.type === 'done') done = { ms: performance.now() - started, model: event.model };
    }
    if (done !== undefined) break;
  }
  if (done === undefined) throw new Error('the pull stream ended without done');
  process.stdout.write(JSON.stringify(done) + '\n');
})().catch((error) => {
  console.error(String(error));
  process.exit(1);
});
`;

/** A plain HTTP download into a file: each chunk written as it comes, one fsync at the end. */
const HTTP_CLIENT = String.raw`
const http = require('node:http');
const fs = require('node:fs/promises');
(async () => {
  const [url, out] = process.argv.slice(1);
  const started = performance.now();
  const file = await fs.open(out, 'w');
  let bytes = 0;
  await new Promise((resolve, reject) => {
    http
      .get(url, (response) => {
        if (response.statusCode !== 200) return reject(new Error('HTTP ' + response.statusCode));
        (async () => {
          for await (const chunk of response) {
            await file.write(chunk, 0, chunk.length, bytes);
            bytes += chunk.length;
          }
        })().then(resolve, reject);
      })
      .on('error', reject);
  });
  await file.datasync();
  await file.close();
  process.stdout.write(JSON.stringify({ ms: performance.now() - started, bytes }) + '\n');
})().catch((error) => {
  console.error(String(error));
  process.exit(1);
});
`;

/** A client of n1's node in n1's namespace: one completion, its tokens and time. */
const GEN_CLIENT = String.raw`
(async () => {
  const [api, body] = process.argv.slice(1);
  const started = performance.now();
  const response = await fetch(api + '/v1/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
  });
  if (!response.ok) throw new Error('HTTP ' + response.status + ': ' + (await response.text()));
  const answer = await response.json();
  process.stdout.write(JSON.stringify({ ms: performance.now() - started, tokens: answer.usage.completion_tokens }) + '\n');
})().catch((error) => {
  console.error(String(error));
  process.exit(1);
});
`;

interface Timed {
  ms: number;
  bytes: number;
}

function log(line: string): void {
  process.stdout.write(`${line}\n`);
}

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};
const mibps = (t: Timed): number => t.bytes / 2 ** 20 / (t.ms / 1000);
const load = (): string =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');

/** Runs a `node -e` script inside a node's namespace; its one JSON line. */
async function inNamespace<T>(lab: ClusterLab, node: LabNode, script: string, args: string[]): Promise<T> {
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  const pin = PIN ? ['taskset', '-c', String(coreOf.get(node) ?? 0)] : [];
  const child = lab.net.spawn(node.host, [...pin, process.execPath, '-e', script, ...args], env);
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  if (code !== 0) throw new Error(`client in ${node.host.ns} failed (${code}): ${stderr}`);
  return JSON.parse(stdout) as T;
}

/** With BENCH_PIN=1: the CPU each lab node (and the clients in its namespace) runs on. */
const coreOf = new Map<LabNode, number>();

/** Moves a process and all its threads (and so the processes it starts later) to one CPU. */
function pinTo(pid: number | undefined, core: number): void {
  if (pid === undefined) throw new Error('BENCH_PIN: a process without a pid');
  execFileSync('taskset', ['-a', '-p', '-c', String(core), String(pid)], { stdio: 'ignore' });
}

/** The model file, generated once into the test-model cache. */
async function modelFile(): Promise<string> {
  const path = join(TEST_MODELS_DIR, `small-${WEIGHT_TYPE}-seed1.gguf`);
  if (existsSync(path)) return path;
  mkdirSync(TEST_MODELS_DIR, { recursive: true });
  log(`generating the small model with ${WEIGHT_TYPE} weights into ${path} …`);
  const temp = `${path}.${process.pid}.tmp`;
  try {
    await generateTestModel({ path: temp, preset: 'small', seed: 1, weightType: WEIGHT_TYPE });
    renameSync(temp, path);
  } finally {
    rmSync(temp, { force: true });
  }
  return path;
}

async function main(): Promise<void> {
  const support = netnsSupport();
  if (!support.ok) {
    console.error(`bench:lan-models needs network namespaces: ${support.reason}`);
    process.exitCode = 2;
    return;
  }
  const file = await modelFile();
  const fileBytes = statSync(file).size;
  const lab = await createClusterLab(0);
  let origin: LabFileServer | undefined;
  try {
    for (const name of ['n1', 'n2', 'n3']) await lab.addNode({ config: { nodeName: name, threads: 1 } });
    const [n1, n2, n3] = lab.nodes as [LabNode, LabNode, LabNode];
    // info: the hives log each model they send (who, from which offset, how many bytes)
    await Promise.all([n1, n2, n3].map((n) => lab.start(n, { RBEE_LOG_LEVEL: 'info' })));
    await waitFor(() => lab.agreedQueen([n1, n2, n3]), { what: 'the nodes to agree', timeoutMs: 60_000 });
    origin = await serveFileIn(lab.net, n1.host, file, { path: '/models/small.gguf' });
    const ref = origin.url;
    if (PIN) {
      for (const [node, core] of [
        [n1, 0],
        [n2, 1],
        [n3, 0],
      ] as const) {
        coreOf.set(node, core);
        pinTo(node.child?.pid, core);
      }
      pinTo(origin.pid, 0);
    }

    const pull = async (node: LabNode, body: object): Promise<Timed & { id: string; sha256: string }> => {
      const { ms, model } = await inNamespace<{
        ms: number;
        model: { id: string; bytes: number; sha256: string };
      }>(lab, node, PULL_CLIENT, [API, JSON.stringify(body)]);
      return { ms, bytes: model.bytes, id: model.id, sha256: model.sha256 };
    };
    const removeFrom = async (node: LabNode, id: string): Promise<void> => {
      await lab.net.exec(node.host, [
        'curl',
        '-sf',
        '-X',
        'DELETE',
        '-H',
        'x-rbee-client: 1',
        `${API}/v1/models/${encodeURIComponent(id)}`,
      ]);
    };
    /** Bytes each hive's log says it sent to `to` since the line counts in `since`. */
    const sentTo = (to: LabNode, since: Map<LabNode, number>): Map<LabNode, number> =>
      new Map(
        [...since].map(([node, from]) => [
          node,
          lab
            .log(node)
            .slice(from)
            .filter((e) => e.peer === to.peerId && typeof e.bytes === 'number')
            .reduce((sum, e) => sum + (e.bytes as number), 0),
        ]),
      );
    const logMarks = (nodes: LabNode[]): Map<LabNode, number> =>
      new Map(nodes.map((n) => [n, lab.log(n).length]));

    log(`bench:lan-models: ${cpus().length} cores (${cpus()[0]?.model ?? '?'}), load ${load()}`);
    if (PIN) log('pinned (BENCH_PIN=1): n1, n3 and the file server on CPU 0; n2 and its clients on CPU 1');
    const held = await pull(n1, { model: ref });
    log(`n1 holds ${ref} (${(fileBytes / 2 ** 20).toFixed(1)} MiB, sha256 ${held.sha256.slice(0, 12)}…)`);
    if (held.bytes !== fileBytes) throw new Error(`n1 holds ${held.bytes} bytes, not ${fileBytes}`);
    const seenBy = async (node: LabNode, holders: string[]): Promise<void> => {
      await waitFor(
        async () => {
          const text = await lab.net.exec(node.host, ['curl', '-sf', `${API}/v1/cluster/models`]);
          const files = (
            JSON.parse(text) as { models: { sha256: string | null; hives: { name: string }[] }[] }
          ).models;
          const names = files.find((f) => f.sha256 === held.sha256)?.hives.map((h) => h.name) ?? [];
          return holders.every((h) => names.includes(h));
        },
        { what: `${holders.join(', ')} holding the model in the view of ${node.host.ns}`, timeoutMs: 30_000 },
      );
    };
    await seenBy(n2, ['n1']);

    const rbee: Timed[] = [];
    const plain: Timed[] = [];
    const out = join(n2.home, 'plain-download.gguf');
    const runA = async (): Promise<void> => {
      const t = await pull(n2, { model: ref, from: 'n1' });
      if (t.sha256 !== held.sha256) throw new Error('n2 catalogued another sha256');
      rbee.push(t);
      await removeFrom(n2, t.id);
    };
    const runB = async (): Promise<void> => {
      const t = await inNamespace<Timed>(lab, n2, HTTP_CLIENT, [ref, out]);
      if (t.bytes !== fileBytes) throw new Error(`the plain download got ${t.bytes} bytes`);
      plain.push(t);
      rmSync(out, { force: true });
    };
    /** (D): tokens per second of a generation on n1, alone and while n2 pulls from n1. */
    const serveAndGenerate = async (): Promise<void> => {
      const body = JSON.stringify({ model: ref, prompt: 'Once upon a time', max_tokens: 64, temperature: 0 });
      const generate = async (): Promise<number> => {
        const t = await inNamespace<{ ms: number; tokens: number }>(lab, n1, GEN_CLIENT, [API, body]);
        if (t.tokens < 8) throw new Error(`the generation stopped after ${t.tokens} tokens`);
        return t.tokens / (t.ms / 1000);
      };
      await generate(); // loads the model into a worker
      const alone: number[] = [];
      const serving: number[] = [];
      for (let round = 0; round < REPEATS; round++) {
        alone.push(await generate());
        const pulling = pull(n2, { model: ref, from: 'n1' });
        // the transfer is under way (seconds long) before the generation starts
        await new Promise((resolve) => setTimeout(resolve, 1_500));
        serving.push(await generate());
        const t = await pulling;
        await removeFrom(n2, t.id);
        log(
          `(D) round ${round + 1}: generation on n1 ${alone.at(-1)!.toFixed(1)} tok/s alone, ` +
            `${serving.at(-1)!.toFixed(1)} tok/s while serving n2; load ${load()}`,
        );
      }
      const d = median(serving) / median(alone);
      log(
        `(D) n1's generation while it serves a pull: ${median(serving).toFixed(1)} tok/s against ` +
          `${median(alone).toFixed(1)} alone; ratio ${d.toFixed(3)}`,
      );
    };
    for (let round = 0; round < REPEATS; round++) {
      // alternate which goes first, so neither always meets a warmer page cache or a quieter machine
      for (const run of round % 2 === 0 ? [runA, runB] : [runB, runA]) await run();
      const a = rbee.at(-1)!;
      const b = plain.at(-1)!;
      log(
        `round ${round + 1}: (A) rbee ${(a.ms / 1000).toFixed(2)} s ${mibps(a).toFixed(1)} MiB/s, ` +
          `(B) plain HTTP ${(b.ms / 1000).toFixed(2)} s ${mibps(b).toFixed(1)} MiB/s; load ${load()}`,
      );
    }
    const a = median(rbee.map(mibps));
    const b = median(plain.map(mibps));
    log('');
    log(
      `model: small preset, ${WEIGHT_TYPE} weights, ${(fileBytes / 2 ** 20).toFixed(1)} MiB; ${REPEATS} rounds, medians`,
    );
    log(`(A) rbee models pull --from n1 (n1 → n2 over the cluster link): ${a.toFixed(1)} MiB/s`);
    log(`(B) plain HTTP download (n1's namespace → n2's, same disk):    ${b.toFixed(1)} MiB/s`);
    log(`A/B = ${(a / b).toFixed(3)} (target ≥ 0.8)`);

    // (C) two holders: measured only where one pull takes bytes from both
    const copy = await pull(n3, { model: ref, from: 'n1' });
    if (copy.sha256 !== held.sha256) throw new Error('n3 catalogued another sha256');
    await seenBy(n2, ['n1', 'n3']);
    const mark = logMarks([n1, n3]);
    const probe = await pull(n2, { model: ref });
    // a hive logs what it sent once its stream ends, which may be just after n2 has the file
    const sent = await waitFor(
      () => {
        const counted = sentTo(n2, mark);
        return [...counted.values()].reduce((x, y) => x + y, 0) >= fileBytes ? counted : undefined;
      },
      { what: 'the holders to log what they sent', timeoutMs: 10_000 },
    );
    await removeFrom(n2, probe.id);
    const both = (sent.get(n1) ?? 0) > 0 && (sent.get(n3) ?? 0) > 0;
    if (!both) {
      await serveAndGenerate();
      log(
        `(C) two holders (n1 and n3): not measured; this build took the file from one holder ` +
          `(n1 sent ${sent.get(n1) ?? 0} bytes, n3 ${sent.get(n3) ?? 0})`,
      );
      return;
    }
    const two: Timed[] = [probe];
    for (let round = 1; round < REPEATS; round++) {
      const t = await pull(n2, { model: ref });
      two.push(t);
      await removeFrom(n2, t.id);
    }
    const c = median(two.map(mibps));
    log(`(C) two holders (n1 and n3 → n2, ranged): ${c.toFixed(1)} MiB/s; C/B = ${(c / b).toFixed(3)}`);
    await serveAndGenerate();
  } finally {
    await origin?.stop();
    await lab.destroy();
    log(`load after: ${load()}`);
  }
}

await main();

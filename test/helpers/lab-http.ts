/**
 * A bare node:http file server inside one host of a NetLab (netns.ts): a model's own source on the
 * private LAN for cluster tests, and the plain-HTTP baseline of `npm run bench:lan-models`. It
 * serves one file at one path (with `Range: bytes=N-`, as a download that resumes asks), 404 else.
 */
import { once } from 'node:events';
import type { LabHost, NetLab } from './netns.js';
import { waitFor } from './wait-for.js';

export interface LabFileServer {
  /** http://<host ip>:<port><path> */
  url: string;
  /** The server process's pid. */
  pid: number | undefined;
  /** Requests for the file so far (as the server counted them). */
  hits(): number;
  stop(): Promise<void>;
}

const SERVER = String.raw`
const http = require('node:http');
const fs = require('node:fs');
const [file, path, port, ip] = process.argv.slice(1);
const size = fs.statSync(file).size;
let hits = 0;
http
  .createServer((req, res) => {
    if (req.url !== path) return void res.writeHead(404).end();
    hits++;
    process.stdout.write('hit ' + hits + '\n');
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const start = range === null ? 0 : Number(range[1]);
    if (start > size) return void res.writeHead(416).end();
    const headers = { 'content-length': String(size - start), 'accept-ranges': 'bytes' };
    if (range !== null) headers['content-range'] = 'bytes ' + start + '-' + (size - 1) + '/' + size;
    res.writeHead(range === null ? 200 : 206, headers);
    if (req.method === 'HEAD') return void res.end();
    fs.createReadStream(file, { start, highWaterMark: 1 << 20 }).pipe(res);
  })
  .listen(Number(port), ip, () => process.stdout.write('ready\n'));
`;

/** Serves `file` at `http://<host ip>:<port><path>` from inside `host`'s namespace. */
export async function serveFileIn(
  net: NetLab,
  host: LabHost,
  file: string,
  options: { port?: number; path?: string } = {},
): Promise<LabFileServer> {
  const port = options.port ?? 8080;
  const path = options.path ?? '/model.gguf';
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  const child = net.spawn(host, [process.execPath, '-e', SERVER, file, path, String(port), host.ip], env);
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = once(child, 'exit');
  await waitFor(
    () => {
      if (child.exitCode !== null) throw new Error(`the file server in ${host.ns} exited: ${stderr}`);
      return stdout.includes('ready\n');
    },
    { what: `the file server in ${host.ns}`, intervalMs: 50 },
  );
  return {
    url: `http://${host.ip}:${port}${path}`,
    pid: child.pid,
    hits: () => stdout.split('\n').filter((line) => line.startsWith('hit ')).length,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
}

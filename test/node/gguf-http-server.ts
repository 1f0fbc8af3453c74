/**
 * A real HTTP server on 127.0.0.1 for download tests: serves a GGUF (with Range, ends clamped to
 * size − 1, as real servers do and the downloader must handle), a fake Hugging Face API, and every way a download can go wrong.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export type Route = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;

export interface TestServer {
  /** `http://127.0.0.1:PORT` */
  origin: string;
  /** Requests seen, by path (without the query). */
  hits: Map<string, number>;
  /** Headers of the latest request, by path. */
  lastHeaders: Map<string, IncomingMessage['headers']>;
  /** Responses whose socket closed before they finished. */
  aborted: string[];
  /** Every request, in order (cleared by the tests that read it). */
  requests: { path: string; url: string; headers: IncomingMessage['headers'] }[];
  route(path: string, handler: Route): void;
  close(): Promise<void>;
}

export async function startServer(): Promise<TestServer> {
  const routes = new Map<string, Route>();
  const hits = new Map<string, number>();
  const lastHeaders = new Map<string, IncomingMessage['headers']>();
  const aborted: string[] = [];
  const requests: TestServer['requests'] = [];
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    hits.set(path, (hits.get(path) ?? 0) + 1);
    lastHeaders.set(path, req.headers);
    requests.push({ path, url: req.url ?? '/', headers: req.headers });
    res.on('close', () => {
      if (!res.writableFinished) aborted.push(path);
    });
    const handler = routes.get(path);
    if (handler === undefined) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    Promise.resolve(handler(req, res)).catch(() => res.destroy());
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    hits,
    lastHeaders,
    aborted,
    requests,
    route: (path, handler) => void routes.set(path, handler),
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

export interface ServeBytesOptions {
  /**
   * `honour` (the default): `Accept-Ranges: bytes`, Range and If-Range as RFC 9110 says.
   * `ignore`: advertises ranges but always answers 200 with the whole body.
   * `none`: no Accept-Ranges, always 200.
   */
  ranges?: 'honour' | 'ignore' | 'none';
  /** Defaults to a strong ETag from the body's sha256; false sends none. */
  etag?: string | false;
  lastModified?: string;
}

interface Planned {
  status: number;
  headers: Record<string, string | number>;
  start: number;
  /** Exclusive. */
  end: number;
}

/** What an honest static file server answers for `body`. */
function plan(req: IncomingMessage, body: Buffer, options: ServeBytesOptions): Planned {
  const ranges = options.ranges ?? 'honour';
  const etag =
    options.etag === false
      ? undefined
      : (options.etag ?? `"${createHash('sha256').update(body).digest('hex').slice(0, 16)}"`);
  const headers: Record<string, string | number> = { 'content-type': 'application/octet-stream' };
  if (ranges !== 'none') headers['accept-ranges'] = 'bytes';
  if (etag !== undefined) headers.etag = etag;
  if (options.lastModified !== undefined) headers['last-modified'] = options.lastModified;
  const whole = (): Planned => ({
    status: 200,
    headers: { ...headers, 'content-length': body.length },
    start: 0,
    end: body.length,
  });
  const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  if (range === null || ranges !== 'honour') return whole();
  const ifRange = req.headers['if-range'];
  if (ifRange !== undefined && ifRange !== etag && ifRange !== options.lastModified) return whole();
  const start = Number(range[1]);
  const end = Math.min(range[2] === '' ? body.length - 1 : Number(range[2]), body.length - 1);
  if (start > end) {
    return {
      status: 416,
      headers: { 'content-range': `bytes */${body.length}`, 'content-length': 0 },
      start: 0,
      end: 0,
    };
  }
  return {
    status: 206,
    headers: {
      ...headers,
      'content-length': end - start + 1,
      'content-range': `bytes ${start}-${end}/${body.length}`,
    },
    start,
    end: end + 1,
  };
}

/** Serves `body` whole, or the asked Range with its end clamped to size − 1. */
export function serveBytes(body: Buffer, options: ServeBytesOptions = {}): Route {
  return (req, res) => {
    const planned = plan(req, body, options);
    res.writeHead(planned.status, planned.headers);
    res.end(body.subarray(planned.start, planned.end));
  };
}

/**
 * Like serveBytes, but the i-th request (from 0) has its connection cut once the file position
 * reaches `cuts[i]`; requests past the list are answered in full.
 */
export function serveCuts(body: Buffer, cuts: readonly number[], options: ServeBytesOptions = {}): Route {
  let count = 0;
  return (req, res) => {
    const cut = cuts[count++];
    const planned = plan(req, body, options);
    res.writeHead(planned.status, planned.headers);
    if (cut === undefined || cut >= planned.end) {
      res.end(body.subarray(planned.start, planned.end));
      return;
    }
    res.write(body.subarray(planned.start, Math.max(planned.start, cut)), () => res.destroy());
  };
}

/** Whole answers are honest; a Range request gets a 206 whose Content-Range says `contentRange`. */
export function serveBadRange(body: Buffer, contentRange: (start: number) => string, cutAt: number): Route {
  let first = true;
  return (req, res) => {
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (range === null) {
      const planned = plan(req, body, {});
      res.writeHead(planned.status, planned.headers);
      if (first) res.write(body.subarray(0, cutAt), () => res.destroy());
      else res.end(body);
      first = false;
      return;
    }
    const start = Number(range[1]);
    const rest = body.subarray(start);
    res.writeHead(206, {
      'content-type': 'application/octet-stream',
      'accept-ranges': 'bytes',
      'content-length': rest.length,
      'content-range': contentRange(start),
      etag: String(plan(req, body, {}).headers.etag),
    });
    res.end(rest);
  };
}

/** Writes `head` and `body` straight to the socket, for answers Node's server would refuse to send. */
export function serveRaw(head: string, body: Buffer): Route {
  return (req) => {
    const socket = req.socket;
    socket.write(Buffer.concat([Buffer.from(head.replaceAll('\n', '\r\n') + '\r\n'), body]), () =>
      socket.end(),
    );
  };
}

/** No Content-Length: the body goes out in chunks of `chunk` bytes. */
export function serveChunked(body: Buffer, chunk = 64 * 1024): Route {
  return async (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    for (let at = 0; at < body.length && !res.destroyed; at += chunk) {
      if (!res.write(body.subarray(at, at + chunk))) {
        await new Promise<void>((resolve) => {
          const done = (): void => {
            res.off('drain', done);
            res.off('close', done);
            resolve();
          };
          res.on('drain', done);
          res.on('close', done);
        });
      }
    }
    res.end();
  };
}

/** Sends the first `at` bytes, then waits for `gate` before sending the rest. */
export function serveGated(body: Buffer, at: number, gate: Promise<void>): Route {
  return async (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
    res.write(body.subarray(0, at));
    await gate;
    if (!res.destroyed) res.end(body.subarray(at));
  };
}

/** Announces the full length, sends `at` bytes, then cuts the connection. */
export function serveCut(body: Buffer, at: number): Route {
  return (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
    res.write(body.subarray(0, at), () => res.destroy());
  };
}

/** Claims `extra` more bytes than it has, sends all it has, then closes (or, with `hang`, never does). */
export function serveLiar(body: Buffer, extra: number, hang = false): Route {
  return (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length + extra });
    res.write(body, () => {
      if (!hang) res.socket?.end();
    });
  };
}

export function serveStatus(status: number): Route {
  return (_req, res) => void res.writeHead(status, { 'content-type': 'text/plain' }).end(`HTTP ${status}`);
}

export function serveJson(value: unknown): Route {
  return (_req, res) => {
    const text = JSON.stringify(value);
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };
}

export function redirectTo(location: string): Route {
  return (_req, res) => void res.writeHead(302, { location }).end();
}

/**
 * A real HTTP server on 127.0.0.1 for download tests: serves a GGUF (with Range, ends clamped to
 * size − 1 as FACTS.md requires), a fake Hugging Face API, and every way a download can go wrong.
 */
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
  route(path: string, handler: Route): void;
  close(): Promise<void>;
}

export async function startServer(): Promise<TestServer> {
  const routes = new Map<string, Route>();
  const hits = new Map<string, number>();
  const lastHeaders = new Map<string, IncomingMessage['headers']>();
  const aborted: string[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    hits.set(path, (hits.get(path) ?? 0) + 1);
    lastHeaders.set(path, req.headers);
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
    route: (path, handler) => void routes.set(path, handler),
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Serves `body` whole, or the asked Range with its end clamped to size − 1. */
export function serveBytes(body: Buffer): Route {
  return (req, res) => {
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (range === null) {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
      res.end(body);
      return;
    }
    const start = Number(range[1]);
    const end = Math.min(range[2] === '' ? body.length - 1 : Number(range[2]), body.length - 1);
    if (start > end) {
      res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
      return;
    }
    res.writeHead(206, {
      'content-type': 'application/octet-stream',
      'content-length': end - start + 1,
      'content-range': `bytes ${start}-${end}/${body.length}`,
    });
    res.end(body.subarray(start, end + 1));
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

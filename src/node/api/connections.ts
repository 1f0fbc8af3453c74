/**
 * A cap on the HTTP connections a node holds at once. Each one costs a socket, a parser and, for an
 * event stream, up to its buffer limit; past the cap a new connection is answered `503
 * TOO_MANY_CONNECTIONS` on the spot and closed, before the HTTP server ever sees it. (Node's own
 * `server.maxConnections` closes such sockets silently, which a client reports as a reset and a
 * person cannot tell from a crashed node.)
 */
import type { Server } from 'node:http';
import type { Socket } from 'node:net';

export const DEFAULT_MAX_CONNECTIONS = 1024;
/** How long a refused client has to read its answer before the socket is destroyed. */
const REFUSED_LINGER_MS = 2_000;

export interface ConnectionCapInit {
  max: number;
  onOpen?: () => void;
  onClose?: () => void;
  onRefused?: () => void;
}

export interface ConnectionCap {
  /** Connections being served now (not counting refused ones still lingering). */
  readonly open: number;
  /** Destroys refused sockets still lingering, so that closing the server need not wait for them. */
  close(): void;
}

function refusal(max: number): string {
  const body = JSON.stringify({
    error: {
      code: 'TOO_MANY_CONNECTIONS',
      message: `this node serves at most ${max} connections at once; try again shortly`,
    },
  });
  return [
    'HTTP/1.1 503 Service Unavailable',
    'content-type: application/json; charset=utf-8',
    `content-length: ${Buffer.byteLength(body)}`,
    'retry-after: 1',
    'connection: close',
    '',
    body,
  ].join('\r\n');
}

/** Puts `server`'s connection handling behind the cap. Call before the server listens. */
export function capConnections(server: Server, init: ConnectionCapInit): ConnectionCap {
  const serve = server.listeners('connection') as Array<(this: Server, socket: Socket) => void>;
  server.removeAllListeners('connection');
  const answer = refusal(init.max);
  const lingering = new Set<Socket>();
  let open = 0;

  const refuse = (socket: Socket): void => {
    init.onRefused?.();
    lingering.add(socket);
    const timer = setTimeout(() => socket.destroy(), REFUSED_LINGER_MS).unref();
    socket.once('close', () => {
      clearTimeout(timer);
      lingering.delete(socket);
    });
    socket.on('error', () => undefined); // a client that resets is no concern of the node's
    // Read (and discard) the request: closing with it unread would reset the answer away.
    socket.resume();
    // the server's sockets are half-open: once the client has read and closed, so does the node
    socket.once('end', () => socket.destroy());
    socket.end(answer);
  };

  server.on('connection', (socket: Socket) => {
    if (open >= init.max) return refuse(socket);
    open += 1;
    init.onOpen?.();
    socket.once('close', () => {
      open -= 1;
      init.onClose?.();
    });
    for (const listener of serve) listener.call(server, socket);
  });

  return {
    get open() {
      return open;
    },
    close() {
      for (const socket of lingering) socket.destroy();
    },
  };
}

import type { FastifyReply } from 'fastify';

/** Takes the response over from fastify and starts a server-sent event stream on it. */
export function openSse(reply: FastifyReply): void {
  reply.hijack();
  reply.raw.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
}

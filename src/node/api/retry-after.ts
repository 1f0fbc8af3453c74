/**
 * An error that says when to try again (a full queue, a key over its limits: `details.retryAfterS`) answers with the
 * standard Retry-After header, which HTTP clients (the official OpenAI SDKs among them) obey.
 */
import type { FastifyReply } from 'fastify';
import type { RbeeError } from '../../shared/errors.js';

export function setRetryAfter(reply: FastifyReply, error: RbeeError): void {
  const seconds = error.details?.retryAfterS;
  if (typeof seconds === 'number' && Number.isFinite(seconds)) {
    void reply.header('retry-after', String(Math.max(1, Math.ceil(seconds))));
  }
}

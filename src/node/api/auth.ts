/**
 * Who may use the HTTP API. Clients on this machine (loopback) are its owner and need nothing;
 * every other client shows an API key (`Authorization: Bearer rbee_…`, as OpenAI clients send it,
 * or `x-api-key`). With `auth: "always"` clients on this machine need one too (but the first key
 * can be created without one). `/health` stays open for probes; keys are managed only from this
 * machine.
 *
 * Each request learns who its client is (`request.apiClient`): the owner of the jobs it submits, and
 * whether it is on this machine.
 */
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import { RbeeError } from '../../shared/errors.js';
import type { ApiKeyStore, KeyLimits } from '../store/index.js';

export type AuthMode = 'remote' | 'always';

/** The owner of what a client on this machine submits without a key: the machine's own user. */
export const LOCAL_OWNER = 'local';

export interface ApiClient {
  /** `key:<id>` for a client that showed an API key, else LOCAL_OWNER. */
  owner: string;
  /** On this machine (loopback). */
  local: boolean;
  /** The API key it showed, with that key's own limits (key-limits.ts). */
  key?: { id: string } & KeyLimits;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the auth hook before any route runs. */
    apiClient: ApiClient;
  }
}

const OPEN_ROUTES = new Set(['/health']);

export function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  return address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.');
}

function presentedKey(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  const bearer = header === undefined ? undefined : /^Bearer\s+(\S+)$/i.exec(header)?.[1];
  const apiKey = request.headers['x-api-key'];
  return bearer ?? (typeof apiKey === 'string' ? apiKey : undefined);
}

export function createAuthHook(init: { keys: ApiKeyStore; mode: AuthMode }) {
  return (request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction): void => {
    // The route fastify matched, never the URL's text: it percent-decodes before matching, so
    // `/v1/%6Beys` reaches the keys route. No route matched: a key is asked for (then 404).
    const route = request.routeOptions.url ?? '';
    const local = isLoopback(request.socket.remoteAddress);
    request.apiClient = { owner: LOCAL_OWNER, local };
    if (OPEN_ROUTES.has(route)) return done();
    if (route === '/v1/keys' || route.startsWith('/v1/keys/')) {
      if (!local)
        return done(new RbeeError('UNAUTHORIZED', "API keys are managed on the node's own machine"));
      // With `always`, the first key is created without one; after that, managing keys takes a key.
      if (init.mode !== 'always' || init.keys.count() === 0) return done();
    } else if (local && init.mode !== 'always') return done();
    const key = presentedKey(request);
    if (key === undefined) {
      return done(
        new RbeeError(
          'UNAUTHORIZED',
          'this node needs an API key (Authorization: Bearer rbee_…); create one with `rbee keys create` on its machine',
        ),
      );
    }
    const info = init.keys.verify(key);
    if (info === undefined) {
      return done(
        new RbeeError('UNAUTHORIZED', 'this API key is not one of this node’s (revoked or mistyped)'),
      );
    }
    request.apiClient = {
      owner: `key:${info.id}`,
      local,
      key: { id: info.id, maxConcurrent: info.maxConcurrent, rpm: info.rpm },
    };
    done();
  };
}

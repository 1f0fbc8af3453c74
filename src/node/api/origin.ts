/**
 * Keeps web pages from driving the node. A browser on this machine is a loopback client, which
 * needs no API key, so without this any page could POST `/v1/shutdown` (a form or a no-cors fetch
 * sends no preflight), and a page whose name re-resolves to 127.0.0.1 (DNS rebinding) could read
 * every route. So every request must:
 *
 * - name this node in its Host: localhost, a loopback address, the listen address, a configured
 *   name (`allowedHosts`), or, when bound to every interface, any IP address (LAN clients address
 *   the machine by IP; a rebinding page always uses a name), with the node's port or none;
 * - come from no web origin (no `Origin` header) or from one configured in `allowedOrigins`;
 * - when it changes something (POST, PUT, PATCH, DELETE), carry a JSON body or `x-rbee-client: 1`:
 *   a page can send neither to another origin without a CORS preflight, which this node never grants.
 *
 * Pages from an allowed origin get CORS headers, and their preflights an answer, so they can read
 * what they asked for. `GET /health` stays open to everyone, as probes use it.
 */
import { isIP } from 'node:net';
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import { RbeeError } from '../../shared/errors.js';

export interface OriginPolicy {
  /** The address the API listens on (config `host`). */
  listenHost: string;
  /** Further names clients may use in Host (lower case, no port). */
  allowedHosts: readonly string[];
  /** Web origins whose pages may call the API, as `URL.origin` spells them. */
  allowedOrigins: readonly string[];
}

const LOOPBACK_HOSTS = ['localhost', '127.0.0.1', '::1'];
const WILDCARD_HOSTS = new Set(['0.0.0.0', '::']);
const CHANGING_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
/** The header rbee's own client sends with every request, bodyless ones included. */
export const CLIENT_HEADER = 'x-rbee-client';

const PREFLIGHT_HEADERS = `authorization, content-type, x-api-key, ${CLIENT_HEADER}`;

const stripBrackets = (host: string): string => host.replace(/^\[(.*)\]$/, '$1');

/** `name[:port]` or `[v6][:port]`, lower-cased; undefined when malformed. */
export function parseHostHeader(value: string): { host: string; port: number | undefined } | undefined {
  const match = /^(\[[^\]]+\]|[^:[\]]+)(?::(\d{1,5}))?$/.exec(value.trim().toLowerCase());
  if (match === null) return undefined;
  return {
    host: stripBrackets(match[1]!),
    port: match[2] === undefined ? undefined : Number(match[2]),
  };
}

/** Whether a Host header names this node (see the file's comment). */
export function hostAllowed(value: string, policy: OriginPolicy, port: number | undefined): boolean {
  const parsed = parseHostHeader(value);
  if (parsed === undefined) return false;
  if (parsed.port !== undefined && port !== undefined && parsed.port !== port) return false;
  const listen = stripBrackets(policy.listenHost.toLowerCase());
  if (LOOPBACK_HOSTS.includes(parsed.host) || parsed.host === listen) return true;
  if (policy.allowedHosts.includes(parsed.host)) return true;
  return WILDCARD_HOSTS.has(listen) && isIP(parsed.host) !== 0;
}

function originAllowed(value: string, policy: OriginPolicy): boolean {
  try {
    return policy.allowedOrigins.includes(new URL(value).origin);
  } catch {
    return false; // `null` (sandboxed frames, file: pages) and anything malformed
  }
}

function isJson(contentType: string | undefined): boolean {
  return contentType?.split(';')[0]?.trim().toLowerCase() === 'application/json';
}

export function createOriginHook(init: { policy: OriginPolicy; port: () => number | undefined }) {
  return (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void => {
    if (request.routeOptions.url === '/health' && (request.method === 'GET' || request.method === 'HEAD'))
      return done();
    const host = request.headers.host;
    if (host === undefined || !hostAllowed(host, init.policy, init.port())) {
      return done(
        new RbeeError(
          'FORBIDDEN_ORIGIN',
          `this node does not answer to host ${JSON.stringify(host ?? '')}; ` +
            'address it by IP or add the name to allowedHosts (RBEE_ALLOWED_HOSTS)',
        ),
      );
    }
    const origin = request.headers.origin;
    if (origin !== undefined) {
      if (!originAllowed(origin, init.policy)) {
        return done(
          new RbeeError(
            'FORBIDDEN_ORIGIN',
            `web pages from ${JSON.stringify(origin)} may not call this node; add the origin to allowedOrigins`,
          ),
        );
      }
      void reply.header('access-control-allow-origin', origin).header('vary', 'Origin');
      if (request.method === 'OPTIONS') {
        // the preflight carries no key: the request that follows it is checked like any other
        void reply
          .status(204)
          .header('access-control-allow-methods', 'GET, POST, DELETE')
          .header('access-control-allow-headers', PREFLIGHT_HEADERS)
          .header('access-control-max-age', '600')
          .send();
        return;
      }
    }
    if (
      CHANGING_METHODS.has(request.method) &&
      !isJson(request.headers['content-type']) &&
      request.headers[CLIENT_HEADER] !== '1'
    ) {
      return done(
        new RbeeError(
          'FORBIDDEN_ORIGIN',
          `${request.method} needs a JSON body (content-type: application/json) or the header ${CLIENT_HEADER}: 1`,
        ),
      );
    }
    done();
  };
}

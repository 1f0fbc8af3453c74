/**
 * One error body for every route: OpenAI's shape, `{error: {message, type, param, code}}`, which the
 * official clients turn into their typed errors by the HTTP status. `code` is rbee's stable code
 * (what NodeClient and the CLI read back), `details` rbee's details when there are any. The OpenAI
 * routes pass `openAiCodes`, which puts OpenAI's own code where it has one (`model_not_found`).
 */
import type { FastifyReply } from 'fastify';
import { RbeeError, toRbeeError, type ErrorCode } from '../../shared/errors.js';
import { setRetryAfter } from './retry-after.js';

export interface ErrorBody {
  error: {
    message: string;
    type: string;
    param: string | null;
    code: string;
    details?: Record<string, unknown>;
  };
}

/** OpenAI's codes for rbee's, where its clients know one. */
const OPENAI_CODES: Partial<Record<ErrorCode, string>> = { MODEL_NOT_FOUND: 'model_not_found' };

const MODEL_CODES: ReadonlySet<ErrorCode> = new Set([
  'MODEL_NOT_FOUND',
  'MODEL_REF_INVALID',
  'MODEL_REF_FORBIDDEN',
]);

function errorType(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 429) return 'rate_limit_error';
  return status < 500 ? 'invalid_request_error' : 'server_error';
}

export function errorBody(error: RbeeError, options: { openAiCodes?: boolean } = {}): ErrorBody {
  const code = (options.openAiCodes === true ? OPENAI_CODES[error.code] : undefined) ?? error.code;
  return {
    error: {
      message: error.message,
      type: errorType(error.httpStatus),
      param: MODEL_CODES.has(error.code) ? 'model' : null,
      code,
      ...(error.details === undefined ? {} : { details: error.details }),
    },
  };
}

export interface AnthropicErrorBody {
  type: 'error';
  error: { type: string; message: string };
}

/** Anthropic's error types, which its clients turn into their typed errors with the status. */
function anthropicType(status: number): string {
  if (status === 400) return 'invalid_request_error';
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status === 413) return 'request_too_large';
  if (status === 429) return 'rate_limit_error';
  if (status === 503) return 'overloaded_error';
  return status < 500 ? 'invalid_request_error' : 'api_error';
}

export function anthropicErrorBody(error: RbeeError): AnthropicErrorBody {
  return { type: 'error', error: { type: anthropicType(error.httpStatus), message: error.message } };
}

/** Whether a request is one of Anthropic's routes (also when no route matched its URL). */
function isAnthropicRoute(reply: FastifyReply): boolean {
  const request = reply.request;
  const path = request.routeOptions.url ?? request.url.split('?')[0] ?? '';
  return path === '/v1/messages' || path.startsWith('/v1/messages/');
}

/**
 * Answers with the error's status, its body in the route's shape, and Retry-After when the error
 * says when to retry.
 */
export function sendErrorBody(
  reply: FastifyReply,
  error: RbeeError,
  options: { openAiCodes?: boolean } = {},
): void {
  setRetryAfter(reply, error);
  void reply
    .status(error.httpStatus)
    .send(isAnthropicRoute(reply) ? anthropicErrorBody(error) : errorBody(error, options));
}

/**
 * What a route's failure is as an RbeeError: one already, fastify's own 4xx (bad JSON, a body too
 * large) as BAD_REQUEST with its message, anything else INTERNAL.
 */
export function requestError(error: unknown): RbeeError {
  if (error instanceof RbeeError) return error;
  const status = (error as { statusCode?: unknown }).statusCode;
  if (typeof status === 'number' && status < 500) {
    return new RbeeError('BAD_REQUEST', (error as Error).message, { cause: error });
  }
  return toRbeeError(error);
}

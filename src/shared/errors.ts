/**
 * Every failure that a user or a script can see carries one of these stable codes: it crosses the
 * wire in JSON, appears in `--json` output, and decides the CLI's exit code. Never branch on messages.
 */
export const ERROR_CODES = {
  // bad input: the caller can fix it
  BAD_REQUEST: { exit: 2, http: 400 },
  MODEL_REF_INVALID: { exit: 2, http: 400 },
  PROMPT_MISSING: { exit: 2, http: 400 },
  CONFIG_INVALID: { exit: 2, http: 400 },
  // an OpenAI request's `n` (choices) beyond what one worker runs at once (its slots)
  TOO_MANY_CHOICES: { exit: 2, http: 400 },
  // no API key, or one this node does not know (clients beyond this machine need one)
  UNAUTHORIZED: { exit: 2, http: 401 },
  // a request a web page could have sent: a Host or Origin that is not the node's, or a state
  // change without a JSON body or `x-rbee-client: 1` (src/node/api/origin.ts)
  FORBIDDEN_ORIGIN: { exit: 2, http: 403 },
  // a model ref that only clients on the node's machine may name: a URL to fetch or a local path
  MODEL_REF_FORBIDDEN: { exit: 2, http: 403 },
  // something named does not exist
  MODEL_NOT_FOUND: { exit: 3, http: 404 },
  JOB_NOT_FOUND: { exit: 3, http: 404 },
  NOT_FOUND: { exit: 3, http: 404 },
  // the model exists but cannot be used
  MODEL_INVALID: { exit: 4, http: 422 },
  MODEL_IN_USE: { exit: 4, http: 409 },
  // the model cannot compute embeddings (e.g. an encoder-decoder model)
  EMBEDDINGS_UNSUPPORTED: { exit: 4, http: 400 },
  // the model cannot score documents against a query: it has no classifier head (not a reranker)
  MODEL_CANNOT_RANK: { exit: 4, http: 400 },
  // a finished answer does not match its JSON schema in a way the grammar could not prevent
  // (a pattern, a number's bounds): the model could not satisfy the schema
  OUTPUT_INVALID: { exit: 4, http: 422 },
  // downloads and disk
  DOWNLOAD_FAILED: { exit: 5, http: 502 },
  DOWNLOAD_TRUNCATED: { exit: 5, http: 502 },
  // the bytes arrived but their sha256 is not the one the source published (e.g. the HF LFS oid)
  CHECKSUM_MISMATCH: { exit: 5, http: 502 },
  DISK_FULL: { exit: 5, http: 507 },
  // the node and its workers
  PORT_IN_USE: { exit: 6, http: 500 },
  NODE_UNREACHABLE: { exit: 6, http: 503 },
  NODE_START_FAILED: { exit: 6, http: 500 },
  NODE_SHUTTING_DOWN: { exit: 6, http: 503 },
  // the node answered with a body this keeper cannot read (another rbee version, or not rbee at all)
  BAD_RESPONSE: { exit: 6, http: 502 },
  // the node stopped (crashed, or was killed) while the job was unfinished; seen after its restart
  NODE_RESTARTED: { exit: 6, http: 503 },
  // a queen command from an older term (a deposed queen): refused by fencing
  STALE_TERM: { exit: 6, http: 409 },
  // a queen command from a node that is not the queen, or a cluster command while none is elected
  NOT_QUEEN: { exit: 6, http: 409 },
  NO_QUEEN: { exit: 6, http: 503 },
  // the node's own limits on one client: too many connections at once, or a stream it does not read
  TOO_MANY_CONNECTIONS: { exit: 6, http: 503 },
  CLIENT_TOO_SLOW: { exit: 6, http: 503 },
  WORKER_START_FAILED: { exit: 7, http: 500 },
  WORKER_CRASHED: { exit: 7, http: 500 },
  WORKER_BUSY: { exit: 7, http: 429 },
  // the queen's queue holds as many jobs as it may; details.retryAfterS says when to try again
  QUEUE_FULL: { exit: 7, http: 429 },
  // an API key over its own limits (concurrent jobs, requests per minute) on the node it called;
  // `details.retryAfterS` says when to try again (the HTTP answer's Retry-After)
  RATE_LIMITED: { exit: 7, http: 429 },
  // the model does not fit in the memory free now, even after unloading idle workers
  INSUFFICIENT_MEMORY: { exit: 7, http: 507 },
  // `rbee doctor --fix`: the native llama.cpp build (or its measurement) failed; workers keep the
  // prebuilt binary
  ENGINE_BUILD_FAILED: { exit: 7, http: 500 },
  // `rbee doctor --fix` while another one runs on the same node
  FIX_IN_PROGRESS: { exit: 7, http: 409 },
  // the job itself
  JOB_CANCELLED: { exit: 130, http: 499 },
  TIMEOUT: { exit: 8, http: 504 },
  INTERNAL: { exit: 1, http: 500 },
} as const satisfies Record<string, { exit: number; http: number }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERROR_CODES, value);
}

export interface RbeeErrorJson {
  code: ErrorCode;
  message: string;
  details?: Record<string, unknown>;
}

export class RbeeError extends Error {
  override readonly name = 'RbeeError';
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    options: { cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super(message, { cause: options.cause });
    this.code = code;
    this.details = options.details;
  }

  get exitCode(): number {
    return ERROR_CODES[this.code].exit;
  }

  get httpStatus(): number {
    return ERROR_CODES[this.code].http;
  }

  toJSON(): RbeeErrorJson {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details };
  }

  static fromJSON(json: RbeeErrorJson): RbeeError {
    return new RbeeError(
      isErrorCode(json.code) ? json.code : 'INTERNAL',
      json.message,
      json.details === undefined ? {} : { details: json.details },
    );
  }
}

/** Wraps anything thrown into an RbeeError, keeping the original as `cause`. */
export function toRbeeError(error: unknown, fallback: ErrorCode = 'INTERNAL'): RbeeError {
  if (error instanceof RbeeError) return error;
  if (error instanceof Error && error.name === 'AbortError') {
    return new RbeeError('JOB_CANCELLED', 'cancelled', { cause: error });
  }
  if (error instanceof Error && error.name === 'TimeoutError') {
    return new RbeeError('TIMEOUT', error.message, { cause: error });
  }
  const message = error instanceof Error ? error.message : String(error);
  return new RbeeError(fallback, message, { cause: error });
}

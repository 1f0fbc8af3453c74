/**
 * Property-based fuzzing of what arrives from outside: every HTTP route that takes a body, with
 * arbitrary JSON and arbitrary bytes, against a real node; and arbitrary frames of every kind into
 * the rpc and stream protocols over the memory transport. The node must answer a bad request with a
 * 4xx and a stable code, never a 5xx; a host must refuse and count a bad frame and go on serving.
 *
 * No generated body names a usable model: every string in it is checked with the real model-ref
 * parser, so nothing can start a download, a worker or a file read (and the traffic stays in
 * process: HTTP through fastify's inject, p2p over the memory transport).
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import fc from 'fast-check';
import { z } from 'zod';
import { startTestNode, type TestNode } from '../helpers/test-node.js';
import { parseModelRef } from '../../src/node/models/index.js';
import { ERROR_CODES, isErrorCode, RbeeError } from '../../src/shared/errors.js';
import { createRpc, defineMethod, RPC_PROTOCOL, type Rpc } from '../../src/p2p/rpc.js';
import { createStreams, defineStream, STREAM_PROTOCOL } from '../../src/p2p/stream.js';
import {
  createFrameChannel,
  createFrameStats,
  DEFAULT_MAX_FRAME_BYTES,
  encodeFrame,
} from '../../src/p2p/codec.js';
import type { P2pHost } from '../../src/p2p/host.js';
import { createScope, hostPair } from '../p2p/helpers.js';

/**
 * Cases per property: 10,000 each (a p2p case costs ~3 ms: every message passes the cluster key's
 * cipher, noise and yamux, and a case that ends its stream costs a new one at ~5 ms; an HTTP case
 * ~1–2 ms), about 100 s for the file on a loaded 2-core machine. RBEE_FUZZ_SCALE=10 runs ten times as
 * many, for a deeper search by hand.
 */
const SCALE = Number(process.env.RBEE_FUZZ_SCALE ?? '1');
// a property of 10,000 p2p cases can take over the suite's default minute on a loaded machine
vi.setConfig({ testTimeout: 300_000 });
const RUNS = {
  httpJson: 10_000 * SCALE,
  httpBytes: 10_000 * SCALE,
  rpc: 10_000 * SCALE,
  stream: 10_000 * SCALE,
};

// ---------------------------------------------------------------------------------------------
// HTTP

const ROUTES = [
  '/v1/jobs',
  '/v1/chat/completions',
  '/v1/completions',
  '/v1/embeddings',
  '/v1/rerank',
  '/v1/models/pull',
  '/v1/workers',
  '/v1/keys',
] as const;
type Route = (typeof ROUTES)[number];
/** The only successes a route may answer: a job accepted (it then fails on its model), a key made. */
const SUCCESS: Partial<Record<Route, number>> = { '/v1/jobs': 202, '/v1/keys': 201 };

/** Field names the routes read, so that generated objects get past the first check. */
const FIELDS = [
  'model',
  'prompt',
  'messages',
  'system',
  'raw',
  'hive',
  'maxTokens',
  'max_tokens',
  'max_completion_tokens',
  'temperature',
  'top_p',
  'seed',
  'stop',
  'stream',
  'stream_options',
  'keepAlive',
  'keep_alive',
  'grammar',
  'jsonSchema',
  'response_format',
  'n',
  'tools',
  'input',
  'encoding_format',
  'query',
  'documents',
  'top_n',
  'return_documents',
  'name',
];

/** Values that reach deeper than random ones: well-typed, empty, huge, nested the routes' way. */
const telling = fc.constantFrom<unknown>(
  '',
  'x',
  'x'.repeat(3000),
  0,
  -1,
  1.5,
  2 ** 53,
  1e308,
  true,
  null,
  [],
  {},
  ['a', 'b'],
  [{ role: 'user', content: 'hi' }],
  [{ role: 'user', content: [{ type: 'text', text: 'hi' }] }],
  [{ role: 'tool', content: null }],
  { type: 'json_schema', json_schema: { schema: { type: 'object' } } },
  { type: 'json_object' },
  { include_usage: true },
  'root ::= "a"',
);
const fieldValue = fc.oneof(fc.jsonValue({ maxDepth: 3 }), telling);
const shaped = fc.dictionary(fc.constantFrom(...FIELDS), fieldValue, { maxKeys: 8 });

function strings(value: unknown, out: string[] = []): string[] {
  if (typeof value === 'string') out.push(value);
  else if (Array.isArray(value)) for (const item of value) strings(item, out);
  else if (typeof value === 'object' && value !== null)
    for (const item of Object.values(value)) strings(item, out);
  return out;
}

/** True when no string in `value` is a model ref the node could fetch, load or read. */
function namesNoModel(value: unknown): boolean {
  return strings(value).every((s) => {
    try {
      parseModelRef(s);
      return false;
    } catch {
      return true;
    }
  });
}

/** A body each route accepts, naming a model that does not parse: valid, then mutated below. */
const NO_MODEL = 'no-such-model';
const TEMPLATES: Record<Route, Record<string, unknown>> = {
  '/v1/jobs': { model: NO_MODEL, prompt: 'hi', maxTokens: 4 },
  '/v1/chat/completions': { model: NO_MODEL, messages: [{ role: 'user', content: 'hi' }] },
  '/v1/completions': { model: NO_MODEL, prompt: 'hi' },
  '/v1/embeddings': { model: NO_MODEL, input: 'hi' },
  '/v1/rerank': { model: NO_MODEL, query: 'hi', documents: ['a', { text: 'b' }] },
  '/v1/models/pull': { model: NO_MODEL },
  '/v1/workers': { model: NO_MODEL },
  '/v1/keys': { name: 'fuzz' },
};
/** The route's valid body with fields replaced, added or removed: reaches past the schemas. */
const nearlyValid = (route: Route): fc.Arbitrary<unknown> =>
  fc
    .tuple(
      fc.dictionary(fc.constantFrom(...FIELDS), fieldValue, { maxKeys: 2 }),
      fc.oneof(
        { weight: 3, arbitrary: fc.constant(undefined) },
        { weight: 1, arbitrary: fc.constantFrom(...Object.keys(TEMPLATES[route])) },
      ),
    )
    .map(([changes, removed]) => {
      const body: Record<string, unknown> = { ...TEMPLATES[route], ...changes };
      if (removed !== undefined) delete body[removed];
      return body;
    });
const jsonBody = (route: Route): fc.Arbitrary<unknown> =>
  fc
    .oneof(fc.jsonValue({ maxDepth: 4 }), shaped, { weight: 2, arbitrary: nearlyValid(route) })
    .filter(namesNoModel);
const routeAndBody = fc
  .constantFrom(...ROUTES)
  .chain((route) => fc.tuple(fc.constant(route), jsonBody(route)));

interface Answer {
  statusCode: number;
  body: string;
}

/** A bad request is a 4xx with a stable code whose status is the code's own; success only where SUCCESS says. */
function checkAnswer(route: Route, answer: Answer): void {
  if (answer.statusCode >= 500 || (answer.statusCode < 400 && SUCCESS[route] !== answer.statusCode)) {
    throw new Error(`${route} answered ${answer.statusCode}: ${answer.body.slice(0, 500)}`);
  }
  if (answer.statusCode < 400) return;
  const raw = (JSON.parse(answer.body) as { error?: { code?: unknown } }).error?.code;
  // the OpenAI routes answer OpenAI's own code where its clients know one
  const code = raw === 'model_not_found' && route !== '/v1/jobs' ? 'MODEL_NOT_FOUND' : raw;
  if (!isErrorCode(code) || ERROR_CODES[code].http !== answer.statusCode) {
    throw new Error(`${route} answered ${answer.statusCode} with code ${String(code)}: ${answer.body}`);
  }
}

describe('HTTP bodies', () => {
  let node: TestNode;
  beforeAll(async () => {
    node = await startTestNode('rbee-fuzz-');
  });
  afterAll(() => node.stop());

  // As the node's own client sends them: its Host and the header that marks a non-browser client,
  // so every body reaches its route instead of stopping at the origin check.
  const clientHeaders = (): Record<string, string> => ({
    host: new URL(node.url).host,
    'x-rbee-client': '1',
  });
  const post = (route: Route, payload: string | Buffer, contentType?: string): Promise<Answer> =>
    node.node.inject({
      method: 'POST',
      url: route,
      headers: { ...clientHeaders(), ...(contentType === undefined ? {} : { 'content-type': contentType }) },
      payload,
    });

  async function expectReady(): Promise<void> {
    const health = await node.node.inject({ method: 'GET', url: '/health', headers: clientHeaders() });
    expect(health.statusCode).toBe(200);
    expect(JSON.parse(health.body)).toMatchObject({ state: 'ready' });
  }

  /** Every job a fuzzed body started ended on its model, with a caller's error, never INTERNAL. */
  async function expectJobsFailedCleanly(): Promise<void> {
    const { jobs } = JSON.parse(
      (await node.node.inject({ method: 'GET', url: '/v1/jobs', headers: clientHeaders() })).body,
    ) as {
      jobs: { state: string; error?: string }[];
    };
    const unclean = jobs.filter(
      (j) =>
        j.state === 'done' ||
        (j.state !== 'running' && !/^(MODEL_REF_INVALID|MODEL_NOT_FOUND|BAD_REQUEST):/.test(j.error ?? '')),
    );
    expect(unclean).toEqual([]);
  }

  it(`answers arbitrary JSON on every route with a 4xx and a code (${RUNS.httpJson} cases)`, async () => {
    await fc.assert(
      fc.asyncProperty(routeAndBody, async ([route, body]) => {
        checkAnswer(route, await post(route, JSON.stringify(body), 'application/json'));
      }),
      { numRuns: RUNS.httpJson },
    );
    await expectReady();
    await expectJobsFailedCleanly();
  });

  it(`answers arbitrary bytes on every route with a 4xx and a code (${RUNS.httpBytes} cases)`, async () => {
    const contentType = fc.option(
      fc.oneof(
        fc.constantFrom(
          'application/json',
          'application/json; charset=utf-8',
          'application/json; charset=latin1',
          'text/plain',
          'application/octet-stream',
          'multipart/form-data; boundary=x',
        ),
        fc.string({ maxLength: 40 }),
      ),
      { nil: undefined },
    );
    const bytes = fc.oneof(
      fc.uint8Array({ maxLength: 600 }),
      // JSON-looking text with bytes flipped: gets furthest into the parser before it breaks
      fc.tuple(routeAndBody, fc.nat(), fc.integer({ min: 0, max: 255 })).map(([[, value], at, byte]) => {
        const text = Buffer.from(JSON.stringify(value));
        if (text.length > 0) text[at % text.length] = byte;
        return new Uint8Array(text);
      }),
    );
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...ROUTES), bytes, contentType, async (route, raw, type) => {
        let parsed: unknown;
        try {
          parsed = JSON.parse(Buffer.from(raw).toString('utf8'));
        } catch {
          parsed = undefined;
        }
        fc.pre(namesNoModel(parsed) && namesNoModel(Buffer.from(raw).toString('latin1')));
        checkAnswer(route, await post(route, Buffer.from(raw), type));
      }),
      { numRuns: RUNS.httpBytes },
    );
    await expectReady();
    await expectJobsFailedCleanly();
  });

  it('refuses a body over the 4 MiB limit with a 4xx on every route', async () => {
    const huge = JSON.stringify({ prompt: 'x'.repeat(5 * 2 ** 20) });
    for (const route of ROUTES) checkAnswer(route, await post(route, huge, 'application/json'));
    await expectReady();
  });
});

// ---------------------------------------------------------------------------------------------
// p2p frames

const KIND_JSON = 0;
const KIND_BYTES = 1;
const KIND_ERROR = 2;

function varint(value: number): number[] {
  const out: number[] = [];
  let rest = value;
  while (rest >= 0x80) {
    out.push((rest & 0x7f) | 0x80);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return out;
}

/** A frame with a chosen kind byte, as a broken or hostile peer might send it. */
function rawFrame(kind: number, body: Uint8Array): Uint8Array {
  return Uint8Array.from([...varint(body.byteLength + 1), kind, ...body]);
}
const json = (value: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(value));

/** One fuzzed frame and how many refusals (malformed + unknown + oversized) it must add. */
interface Fuzzed {
  bytes: Uint8Array;
  refusals: number;
  what: string;
}

const echo = defineMethod('fuzz.echo', z.object({ n: z.number().int() }), z.object({ n: z.number().int() }));
const echoKind = defineStream('fuzz.echo', {
  params: z.object({ n: z.number().int() }),
  up: z.object({ n: z.number().int() }),
  down: z.object({ n: z.number().int() }),
});

const notJsonBytes = fc.uint8Array({ minLength: 1, maxLength: 64 }).filter((b) => {
  try {
    JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(b));
    return false;
  } catch {
    return true;
  }
});
const badId = fc.oneof(
  fc.integer({ max: -1 }),
  fc.double({ noNaN: true, noDefaultInfinity: true }).filter((d) => !Number.isInteger(d)),
  fc.constant(2 ** 60),
  fc.string({ maxLength: 8 }),
  fc.constant(null),
  fc.boolean(),
);
const badDeadline = fc.oneof(
  fc.integer({ max: 0 }),
  fc.constant(10 * 60_000 + 1),
  fc.double({ min: 0.1, max: 1000, noNaN: true }).filter((d) => !Number.isInteger(d)),
  fc.string({ maxLength: 8 }),
);
/** Params `fuzz.echo` refuses. */
const badParams = fc.jsonValue({ maxDepth: 2 }).filter((v) => !echo.params.safeParse(v).success);
const errorJson = fc.oneof(
  fc.record({
    code: fc.oneof(fc.constantFrom(...Object.keys(ERROR_CODES)), fc.string({ maxLength: 12 })),
    message: fc.string({ maxLength: 40 }),
  }),
  fc.jsonValue({ maxDepth: 2 }),
);

/**
 * Frames that leave the stream usable: each is refused and counted (or, a cancel for nothing, is
 * ignored), and the peer reads on. `upSchemaOk` marks the stream protocol's phase after opening,
 * where the handler reads `{ n }` frames and an rpc request is just another malformed frame.
 */
function softFrame(protocol: 'rpc' | 'stream-up'): fc.Arbitrary<Fuzzed> {
  const common: fc.Arbitrary<Fuzzed>[] = [
    fc
      .tuple(fc.integer({ min: 3, max: 255 }), fc.uint8Array({ maxLength: 64 }))
      .map(([kind, body]) => ({ bytes: rawFrame(kind, body), refusals: 1, what: `kind ${kind}` })),
    fc.uint8Array({ maxLength: 128 }).map((body) => ({
      bytes: rawFrame(KIND_BYTES, body),
      refusals: 1,
      what: 'bytes frame',
    })),
    notJsonBytes.map((body) => ({ bytes: rawFrame(KIND_JSON, body), refusals: 1, what: 'not JSON' })),
    errorJson.map((value) => ({
      bytes: rawFrame(KIND_ERROR, json(value)),
      refusals: 1,
      what: 'error frame',
    })),
  ];
  if (protocol === 'stream-up') {
    const wrong = fc
      .jsonValue({ maxDepth: 3 })
      .filter((v) => !echoKind.up.safeParse(v).success)
      .map((value) => ({ bytes: rawFrame(KIND_JSON, json(value)), refusals: 1, what: 'wrong up frame' }));
    return fc.oneof(...common, wrong);
  }
  const request = (value: Record<string, unknown>): Uint8Array => rawFrame(KIND_JSON, json(value));
  const rpcOnly: fc.Arbitrary<Fuzzed>[] = [
    fc
      .jsonValue({ maxDepth: 3 })
      .filter((v) => typeof v !== 'object' || v === null || Array.isArray(v) || !('id' in v))
      .map((value) => ({ bytes: rawFrame(KIND_JSON, json(value)), refusals: 1, what: 'not a request' })),
    fc.tuple(badId, fc.jsonValue({ maxDepth: 2 })).map(([id, params]) => ({
      bytes: request({ id, method: 'fuzz.echo', params }),
      refusals: 1,
      what: 'bad id',
    })),
    fc
      .tuple(fc.nat(), fc.string({ minLength: 1, maxLength: 300 }), fc.jsonValue({ maxDepth: 2 }))
      .filter(([, method]) => method !== echo.name)
      .map(([id, method, params]) => ({
        bytes: request({ id, method, params }),
        refusals: 1,
        what: 'unknown method',
      })),
    fc.tuple(fc.nat(), badParams).map(([id, params]) => ({
      bytes: request({ id, method: echo.name, params }),
      refusals: 1,
      what: 'bad params',
    })),
    fc.tuple(fc.nat(), badDeadline).map(([id, deadlineMs]) => ({
      bytes: request({ id, method: echo.name, params: { n: 1 }, deadlineMs }),
      refusals: 1,
      what: 'bad deadline',
    })),
    fc
      .tuple(
        fc.nat(),
        fc.jsonValue({ maxDepth: 1 }).filter((v) => v !== true),
      )
      .map(([id, cancel]) => ({
        bytes: request({ id, cancel, params: null }),
        refusals: 1,
        what: 'bad cancel',
      })),
    // a cancel for a call that is not running: valid, and ignored
    fc.nat().map((id) => ({
      bytes: request({ id, cancel: true, params: null }),
      refusals: 0,
      what: 'stray cancel',
    })),
  ];
  return fc.oneof(...common, ...rpcOnly);
}

/** Frames after which the stream cannot go on: a bad length prefix, or an end inside a frame. */
type Fatal = Fuzzed & { truncated: boolean };
const fatalFrame: fc.Arbitrary<Fatal> = fc.oneof(
  fc.integer({ min: DEFAULT_MAX_FRAME_BYTES + 1, max: 2 ** 34 }).map((length) => ({
    bytes: Uint8Array.from(varint(length)),
    refusals: 1,
    what: 'oversized',
    truncated: false,
  })),
  fc.constant({ bytes: Uint8Array.of(0), refusals: 1, what: 'empty frame', truncated: false }),
  fc.constant({
    bytes: Uint8Array.of(0x80, 0x80, 0x80, 0x80, 0x80, 0x01),
    refusals: 1,
    what: 'length prefix too long',
    truncated: false,
  }),
  fc.tuple(fc.integer({ min: 2, max: 1000 }), fc.uint8Array({ maxLength: 1 })).map(([length, body]) => ({
    bytes: Uint8Array.from([...varint(length), ...body]),
    refusals: 1,
    what: 'cut off by the end',
    truncated: true,
  })),
);

/** No fatal frame in most cases: a stream that survives takes many cases, and opening one is dear. */
const sometimesFatal = fc.oneof(
  { weight: 7, arbitrary: fc.constant(null) },
  { weight: 1, arbitrary: fatalFrame },
);

const refusals = (host: P2pHost): number =>
  host.frameStats.malformed + host.frameStats.unknown + host.frameStats.oversized;

/**
 * Waits until `host` has counted `expected` more refusals than `before`. Frames cross the memory
 * transport and are decrypted on later turns of the event loop; a sentinel round trip per case
 * would cost more than the case. The bound only decides how long a failure takes to show: a count
 * that stays short fails the assertion after it, and one that overshoots fails the next case.
 */
async function counted(host: P2pHost, before: number, expected: number): Promise<void> {
  const giveUp = performance.now() + 10_000;
  while (refusals(host) - before < expected && performance.now() < giveUp) {
    await new Promise((resolve) => setImmediate(resolve));
  }
}

describe('p2p frames', () => {
  const scope = createScope();
  let a: P2pHost;
  let b: P2pHost;
  let client: Rpc;

  beforeAll(async () => {
    [a, b] = await hostPair(scope);
    client = createRpc({ host: a });
    const server = createRpc({ host: b });
    await client.start();
    await server.start();
    server.handle(echo, ({ n }) => ({ n }));
    const streams = createStreams({ host: b });
    await streams.start();
    streams.handle(echoKind, async ({ channel }) => {
      for (;;) {
        let frame: { n: number } | undefined;
        try {
          frame = await channel.read();
        } catch (error) {
          // a refused frame (counted by the codec) is skipped; a lost stream ends the handler
          if (
            error instanceof RbeeError &&
            error.details?.frame !== undefined &&
            channel.stream.status === 'open'
          )
            continue;
          throw error;
        }
        if (frame === undefined) return;
        await channel.write(frame);
      }
    });
    scope.defer(() => Promise.resolve(streams.stop()));
  });
  afterAll(() => scope.cleanup());

  /** Our side of a raw stream: send anything, read back whatever frames come. */
  async function rawStream(protocol: string) {
    const stream = await a.openStream(b.peerId, protocol);
    const reader = createFrameChannel<unknown>(stream, { schema: z.unknown(), stats: createFrameStats() });
    const closed = new Promise<void>((resolve) =>
      stream.addEventListener('close', () => resolve(), { once: true }),
    );
    return { stream, reader, closed };
  }
  type RawStream = Awaited<ReturnType<typeof rawStream>>;

  /** Reads until a frame matching `match` arrives; refused or foreign frames in between are skipped. */
  async function readUntil(reader: RawStream['reader'], match: (frame: unknown) => boolean): Promise<void> {
    for (;;) {
      const frame = await reader.read().catch(() => null);
      if (frame === undefined) throw new Error('the stream ended before the awaited frame');
      if (frame !== null && match(frame)) return;
    }
  }

  /** Sends the frames of one case, then a fatal one if any; returns the stream if it is still usable. */
  async function sendCase(
    session: RawStream,
    soft: Fuzzed[],
    fatal: Fatal | null,
    before: number,
    expected: number,
  ): Promise<RawStream | undefined> {
    // One chunk for the soft frames: the decoder splits it, and the transport encrypts one message,
    // not five. The fatal frame goes after they are counted: frames still queued when a stream is
    // cut off are dropped with it, unread, and neither served nor refused.
    session.stream.send(Buffer.concat(soft.map((f) => f.bytes)));
    await counted(b, before, expected - (fatal?.refusals ?? 0));
    if (fatal === null) return session;
    session.stream.send(fatal.bytes);
    if (fatal.truncated) await session.stream.close();
    await session.closed;
    return undefined;
  }

  it(`refuses and counts arbitrary frames on the rpc protocol (${RUNS.rpc} cases)`, async () => {
    let session: RawStream | undefined;
    await fc.assert(
      fc.asyncProperty(fc.array(softFrame('rpc'), { maxLength: 4 }), sometimesFatal, async (soft, fatal) => {
        const before = refusals(b);
        const expected = soft.reduce((sum, f) => sum + f.refusals, fatal?.refusals ?? 0);
        session = await sendCase(session ?? (await rawStream(RPC_PROTOCOL)), soft, fatal, before, expected);
        expect(refusals(b) - before).toBe(expected);
      }),
      { numRuns: RUNS.rpc },
    );
    // the session that took the fuzz still serves a real request, and so does the host
    session ??= await rawStream(RPC_PROTOCOL);
    session.stream.send(encodeFrame({ id: 2 ** 40, method: echo.name, params: { n: 5 } }));
    await readUntil(session.reader, (f) => (f as { result?: { n?: number } }).result?.n === 5);
    session.stream.abort(new Error('done'));
    expect(await client.call(b.peerId, echo, { n: 7 })).toEqual({ n: 7 });
  });

  it(`refuses and counts arbitrary frames on the stream protocol (${RUNS.stream} cases)`, async () => {
    const badOpening = fc.oneof(
      fc.oneof(softFrame('stream-up'), softFrame('rpc')).filter((f) => f.refusals === 1),
      fc
        .record({ kind: fc.string({ maxLength: 210 }), params: fc.jsonValue({ maxDepth: 2 }) })
        .filter(({ kind }) => kind !== echoKind.name)
        .map((open) => ({ bytes: rawFrame(KIND_JSON, json(open)), refusals: 1, what: 'unknown kind' })),
      badParams.map((params) => ({
        bytes: rawFrame(KIND_JSON, json({ kind: echoKind.name, params })),
        refusals: 1,
        what: 'bad params',
      })),
    );
    const open = async (): Promise<RawStream> => {
      const session = await rawStream(STREAM_PROTOCOL);
      session.stream.send(encodeFrame({ kind: echoKind.name, params: { n: 0 } }));
      await readUntil(session.reader, (f) => (f as { ok?: boolean }).ok === true);
      return session;
    };
    let session: RawStream | undefined;
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          // a bad opening: refused, and the host answers with an error frame and ends the stream
          { weight: 1, arbitrary: badOpening.map((frame) => ({ opening: frame })) },
          // frames after a good opening, read by the kind's handler
          {
            weight: 3,
            arbitrary: fc.record({
              soft: fc.array(softFrame('stream-up'), { maxLength: 4 }),
              fatal: sometimesFatal,
            }),
          },
        ),
        async (fuzz) => {
          const before = refusals(b);
          if ('opening' in fuzz) {
            const refused = await rawStream(STREAM_PROTOCOL);
            refused.stream.send(fuzz.opening.bytes);
            await refused.stream.close().catch(() => undefined);
            await refused.closed;
            expect(refusals(b) - before).toBe(1);
            return;
          }
          const { soft, fatal } = fuzz;
          const expected = soft.reduce((sum, f) => sum + f.refusals, fatal?.refusals ?? 0);
          session = await sendCase(session ?? (await open()), soft, fatal, before, expected);
          expect(refusals(b) - before).toBe(expected);
        },
      ),
      { numRuns: RUNS.stream },
    );
    // the stream that took the fuzz still echoes, and the host opens new ones
    for (const stream of [session ?? (await open()), await open()]) {
      stream.stream.send(encodeFrame({ n: 9 }));
      await readUntil(stream.reader, (f) => (f as { n?: number }).n === 9);
      await stream.stream.close();
      await stream.closed;
    }
    expect(await client.call(b.peerId, echo, { n: 8 })).toEqual({ n: 8 });
  });
});

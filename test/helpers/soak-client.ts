/**
 * One soak client: run inside a host's network namespace (the node's API listens on that
 * namespace's loopback), it streams jobs to its node without pause, `SOAK_CLIENT_CONCURRENCY` at a
 * time, in a seeded mix of kinds (rbee jobs with a prompt, messages and tools, a JSON schema,
 * embeddings, some cancelled after their first token; OpenAI chat, completions and embeddings), and
 * writes one JSON line per job (a `SoakJob`) on stdout. A line "stop" on stdin stops new jobs; the
 * client exits once the jobs under way have ended (each given `SOAK_CLIENT_DRAIN_MS` at most).
 *
 * A job whose stream breaks (its entry node died, or was cut off) is not counted lost at once: the
 * client asks the node for the job's row until the node answers again, as a user would, and takes
 * the row's end (a restarted node marks its unfinished jobs failed with NODE_RESTARTED). Only a job
 * that no stream and no row ever ended is `lost`.
 */
import '../../src/shared/polyfill.js';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { createNodeClient } from '../../src/node/client/index.js';
import { isErrorCode, RbeeError } from '../../src/shared/errors.js';
import type { JobEvent, JobRequest } from '../../src/shared/wire.js';

export const SOAK_KINDS = [
  'prompt',
  'messages',
  'tools',
  'json',
  'embed',
  'cancel',
  'openai-chat',
  'openai-completion',
  'openai-embeddings',
] as const;
export type SoakKind = (typeof SOAK_KINDS)[number];

export interface SoakJob {
  client: string;
  kind: SoakKind;
  /** The job's id, once the node accepted it. */
  id?: string;
  /** Epoch ms: submitted, first token, ended. */
  start: number;
  firstToken?: number;
  end: number;
  tokens: number;
  /**
   * refused: never accepted (no id, no response started), with the error's code; done, cancelled,
   * failed (with a code): ended; lost: accepted, and nothing ever said how it ended.
   */
  outcome: 'refused' | 'done' | 'cancelled' | 'failed' | 'lost';
  code?: string;
  message?: string;
  /** How the end was learnt: the stream's last event, or the job's row after the stream broke. */
  via?: 'stream' | 'row';
}

const API = 'http://127.0.0.1:7833';
const MODEL = 'demo';

/** A small seeded PRNG (mulberry32): the same seed, the same sequence of kinds. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Refused extends Error {
  constructor(readonly code: string) {
    super(code);
  }
}

const codeOf = (error: unknown): string => {
  if (error instanceof RbeeError) return error.code;
  if (error instanceof Refused) return error.code;
  return 'NODE_UNREACHABLE';
};

function clientMain(): void {
  const name = process.env.SOAK_CLIENT_NAME ?? 'client';
  const concurrency = Number(process.env.SOAK_CLIENT_CONCURRENCY ?? 2);
  const drainMs = Number(process.env.SOAK_CLIENT_DRAIN_MS ?? 90_000);
  const random = prng(Number(process.env.SOAK_CLIENT_SEED ?? 1));
  const client = createNodeClient({ url: API });
  let stopping = false;
  let stopAt = Number.POSITIVE_INFINITY;
  const drained = (): boolean => Date.now() > stopAt + drainMs;
  createInterface({ input: process.stdin }).on('line', (line) => {
    if (line.trim() === 'stop') {
      stopping = true;
      stopAt = Date.now();
    }
  });
  const report = (job: SoakJob): void => void process.stdout.write(`${JSON.stringify(job)}\n`);

  /** After a broken stream: the job's row, once the node answers, until it is final. */
  const fromRow = async (job: SoakJob): Promise<void> => {
    for (;;) {
      if (drained()) return;
      try {
        const row = await client.jobRecord(job.id!, { signal: AbortSignal.timeout(3_000) });
        if (row.state === 'done' || row.state === 'failed' || row.state === 'cancelled') {
          job.outcome = row.state;
          if (row.errorCode != null) job.code = row.errorCode;
          if (row.errorMessage != null) job.message = row.errorMessage;
          job.via = 'row';
          return;
        }
        // still running on the node: follow its events again
        for await (const event of client.jobEvents(job.id!, { signal: AbortSignal.timeout(60_000) })) {
          if (end(job, event)) return;
        }
      } catch {
        // the node is down or cut off: ask again
      }
      await sleep(500);
    }
  };

  /** Records a terminal event; true when the job ended. */
  const end = (job: SoakJob, event: JobEvent): boolean => {
    if (event.type === 'token') {
      job.firstToken ??= Date.now();
      job.tokens++;
    } else if (event.type === 'done') {
      job.outcome = event.finishReason === 'cancelled' ? 'cancelled' : 'done';
      job.via = 'stream';
      return true;
    } else if (event.type === 'error') {
      job.outcome = event.error.code === 'JOB_CANCELLED' ? 'cancelled' : 'failed';
      job.code = event.error.code;
      job.message = event.error.message;
      job.via = 'stream';
      return true;
    }
    return false;
  };

  const rbeeJob = async (job: SoakJob, request: JobRequest, cancel: boolean): Promise<void> => {
    let accepted;
    try {
      accepted = await client.submitJob(request, { signal: AbortSignal.timeout(30_000) });
    } catch (error) {
      job.outcome = 'refused';
      job.code = codeOf(error);
      job.message = (error as Error).message;
      return;
    }
    job.id = accepted.id;
    try {
      for await (const event of client.jobEvents(accepted.id, { signal: AbortSignal.timeout(120_000) })) {
        if (end(job, event)) return;
        if (cancel && event.type === 'token' && job.tokens === 1)
          void client.cancelJob(accepted.id).catch(() => {});
      }
    } catch {
      // the stream broke before the job's last event
    }
    await fromRow(job);
  };

  /** An OpenAI route, streamed (SSE chunks until [DONE]) or not; the job id is in the chunk ids. */
  const openAi = async (job: SoakJob, path: string, body: Record<string, unknown>): Promise<void> => {
    let response: Response;
    try {
      response = await fetch(`${API}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(120_000),
      });
    } catch (error) {
      job.outcome = 'refused';
      job.code = codeOf(error);
      return;
    }
    if (!response.ok) {
      const answer = (await response.json().catch(() => ({}))) as {
        error?: { code?: string; message?: string };
      };
      job.outcome = 'refused';
      job.code = answer.error?.code ?? 'BAD_RESPONSE';
      if (answer.error?.message !== undefined) job.message = answer.error.message;
      return;
    }
    if (body.stream !== true) {
      try {
        const answer = (await response.json()) as { data?: unknown[] };
        job.outcome = Array.isArray(answer.data) ? 'done' : 'failed';
        if (job.outcome === 'failed') job.code = 'BAD_RESPONSE';
      } catch {
        job.outcome = 'lost';
      }
      job.via = 'stream';
      return;
    }
    let buffer = '';
    const decoder = new TextDecoder();
    try {
      for await (const piece of response.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(piece, { stream: true });
        let cut: number;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = block
            .split('\n')
            .filter((l) => l.startsWith('data: '))
            .map((l) => l.slice(6))
            .join('\n');
          if (data === '') continue;
          if (data === '[DONE]') {
            job.outcome ??= 'done';
            if (job.outcome === 'lost') job.outcome = 'done';
            job.via = 'stream';
            return;
          }
          const chunk = JSON.parse(data) as {
            id?: string;
            error?: { code?: string; message?: string };
            choices?: Array<{ delta?: { content?: string }; text?: string }>;
          };
          if (chunk.error !== undefined) {
            job.outcome = 'failed';
            job.code = chunk.error.code ?? 'BAD_RESPONSE';
            if (chunk.error.message !== undefined) job.message = chunk.error.message;
            job.via = 'stream';
            return;
          }
          job.id ??= chunk.id?.replace(/^(chat)?cmpl-/, '');
          const text = chunk.choices?.[0]?.delta?.content ?? chunk.choices?.[0]?.text;
          if (text !== undefined && text !== '') {
            job.firstToken ??= Date.now();
            job.tokens++;
          }
        }
      }
    } catch {
      // the stream broke
    }
    if (job.id !== undefined) await fromRow(job);
  };

  const one = async (): Promise<SoakJob> => {
    const kind = SOAK_KINDS[Math.floor(random() * SOAK_KINDS.length)]!;
    const seed = Math.floor(random() * 1_000_000);
    const maxTokens = 16 + Math.floor(random() * 48);
    const job: SoakJob = { client: name, kind, start: Date.now(), end: 0, tokens: 0, outcome: 'lost' };
    const base = { model: MODEL, maxTokens, temperature: 0.7, seed };
    switch (kind) {
      case 'prompt':
        await rbeeJob(job, { ...base, prompt: `soak ${seed}` }, false);
        break;
      case 'messages':
        await rbeeJob(
          job,
          { ...base, system: 'Be brief.', messages: [{ role: 'user', content: `hi ${seed}` }] },
          false,
        );
        break;
      case 'tools':
        await rbeeJob(
          job,
          {
            ...base,
            messages: [{ role: 'user', content: `weather ${seed}?` }],
            tools: [
              {
                name: 'weather',
                description: 'The weather in a city',
                parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
              },
            ],
          },
          false,
        );
        break;
      case 'json':
        await rbeeJob(
          job,
          {
            ...base,
            prompt: `json ${seed}`,
            jsonSchema: { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] },
          },
          false,
        );
        break;
      case 'embed':
        await rbeeJob(job, { model: MODEL, embed: [`soak ${seed}`, 'second text'] }, false);
        break;
      case 'cancel':
        await rbeeJob(job, { ...base, maxTokens: 4_000, prompt: `cancel ${seed}` }, true);
        break;
      case 'openai-chat':
        await openAi(job, '/v1/chat/completions', {
          model: MODEL,
          stream: true,
          max_tokens: maxTokens,
          seed,
          messages: [{ role: 'user', content: `chat ${seed}` }],
        });
        break;
      case 'openai-completion':
        await openAi(job, '/v1/completions', {
          model: MODEL,
          stream: true,
          max_tokens: maxTokens,
          seed,
          prompt: `c ${seed}`,
        });
        break;
      case 'openai-embeddings':
        await openAi(job, '/v1/embeddings', { model: MODEL, input: [`e ${seed}`] });
        break;
    }
    job.end = Date.now();
    if (job.code !== undefined && !isErrorCode(job.code))
      job.message = `undocumented code: ${job.message ?? ''}`;
    return job;
  };

  const lane = async (): Promise<void> => {
    while (!stopping) {
      const job = await one();
      report(job);
      // a refused job (the node is down): wait a moment rather than spin
      if (job.outcome === 'refused') await sleep(250);
    }
  };
  void Promise.all(Array.from({ length: concurrency }, lane)).then(() => process.exit(0));
}

if (process.env.SOAK_ROLE === 'client') clientMain();

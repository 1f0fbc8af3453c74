/**
 * One job on one machine, following the happy flow: it runs on the hive that received it (placement
 * across the cluster's hives comes later),
 * the hive makes sure the model is on disk and a worker has it loaded, the worker streams tokens.
 */
import { parseKeepAlive } from '../../shared/duration.js';
import { RbeeError } from '../../shared/errors.js';
import { mib } from '../../shared/format.js';
import type { NarrationSource, Progress } from '../../shared/wire.js';
import type { GenerateRequest } from '../../engine/types.js';
import type { Provisioner } from '../hive/provisioner.js';
import type { ModelRef } from '../hive/model-ref.js';
import type { WorkerPool } from '../hive/worker-pool.js';
import type { JobContext } from './job-manager.js';

export interface RunJobDeps {
  nodeName: string;
  parseModelRef: (input: string) => ModelRef;
  provisioner: Provisioner;
  workers: WorkerPool;
}

export function createJobRunner(deps: RunJobDeps): (job: JobContext) => Promise<void> {
  return async function runJob(job) {
    const narrate = (source: NarrationSource, text: string, progress?: Progress): void =>
      job.emit({
        type: 'narration',
        source,
        node: deps.nodeName,
        text,
        ...(progress === undefined ? {} : { progress }),
      });
    const { request, signal } = job;

    const ref = deps.parseModelRef(request.model);
    const keepAliveS = request.keepAlive === undefined ? undefined : parseKeepAlive(request.keepAlive);
    // placement across hives is not built yet: a job runs on the hive of the node that received it
    narrate('hive', `running the job on this hive (${deps.nodeName}), which received it`);

    let lastLine: string | undefined;
    const { model, cached } = await deps.provisioner.ensure(ref, {
      signal,
      onProgress: (p) => {
        if (p.phase === 'downloading') {
          const total = p.totalBytes === undefined ? '' : ` of ${mib(p.totalBytes)}`;
          narrate('hive', `downloading ${p.file ?? request.model}: ${mib(p.bytes)}${total}`, {
            bytes: p.bytes,
            ...(p.totalBytes === undefined ? {} : { totalBytes: p.totalBytes }),
            ...(p.bytesPerSecond === undefined ? {} : { bytesPerSecond: p.bytesPerSecond }),
            ...(p.etaSeconds === undefined ? {} : { etaSeconds: p.etaSeconds }),
          });
          return;
        }
        // The line after provisioning says the model is ready, so 'done' needs no line of its own.
        if (p.phase === 'done') return;
        const line = p.message ?? `${p.phase} ${p.file ?? request.model}`;
        if (line !== lastLine) narrate('hive', line);
        lastLine = line;
      },
    });
    narrate(
      'hive',
      cached
        ? `model ${model.id} is on disk (${mib(model.bytes)}, ${model.quantization})`
        : `model ${model.id} ready (${mib(model.bytes)}, ${model.quantization})`,
    );

    const lease = await deps.workers.acquire(model, { signal, narrate: (text) => narrate('hive', text) });
    try {
      // Everything else in the request is sampling (samplingSchema), passed to the engine as is.
      const {
        model: _model,
        prompt: _prompt,
        messages: _messages,
        system: _system,
        raw: _raw,
        keepAlive: _keep,
        ...sampling
      } = request;
      const generateRequest: GenerateRequest = { ...sampling };
      if (request.raw === true && request.prompt !== undefined) {
        generateRequest.prompt = request.prompt;
      } else {
        const messages = request.messages ?? [{ role: 'user' as const, content: request.prompt ?? '' }];
        generateRequest.messages =
          request.system === undefined
            ? messages
            : [{ role: 'system', content: request.system }, ...messages];
      }
      narrate('worker', `generating on worker ${lease.worker.id}`);
      let firstTokenAt: number | undefined;
      for await (const chunk of lease.generate(generateRequest, { signal })) {
        if (chunk.type === 'token') {
          firstTokenAt ??= Date.now();
          job.emit({ type: 'token', text: chunk.text });
          continue;
        }
        const end = Date.now();
        job.emit({
          type: 'done',
          model: model.id,
          finishReason: chunk.finishReason,
          usage: chunk.usage,
          timings: {
            timeToFirstTokenMs: (firstTokenAt ?? end) - job.acceptedAt,
            tokensPerSecond: chunk.tokensPerSecond,
            totalMs: end - job.acceptedAt,
          },
        });
        return;
      }
      throw new RbeeError('WORKER_CRASHED', 'the worker ended the stream without a result');
    } finally {
      lease.release(keepAliveS === undefined ? {} : { keepAliveS });
    }
  };
}

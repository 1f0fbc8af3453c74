/**
 * `rbee infer`: wake the local node if needed, submit the job, stream its events, print a summary,
 * and put the node back to sleep if this command woke it. Ctrl-C cancels the job and still cleans up.
 */
import { RbeeError } from '../../shared/errors.js';
import type { JobRequest } from '../../shared/wire.js';
import { ensureNodeAwake, stopNode, type NodeClient } from '../../node/client/index.js';
import type { Output } from './output.js';

export interface InferInit {
  client: NodeClient;
  output: Output;
  request: JobRequest;
  wake: { mainScript: string; env: NodeJS.ProcessEnv; nodeLog: string };
  /** Aborted on Ctrl-C. */
  signal: AbortSignal;
}

/** Resolves with the process exit code. */
export async function runInfer(init: InferInit): Promise<number> {
  const { client, output, signal } = init;
  const awake = await ensureNodeAwake({
    client,
    mainScript: init.wake.mainScript,
    env: init.wake.env,
    nodeLog: init.wake.nodeLog,
    narrate: (text) => output.narrate('keeper', text),
    signal,
  });
  try {
    return await streamJob(init);
  } finally {
    if (awake.woke) {
      output.narrate('keeper', 'stopping the node this command woke');
      const { forced } = await stopNode(client, awake.health.pid);
      output.narrate('keeper', forced ? 'node did not stop in time; killed it' : 'node stopped');
    }
  }
}

async function streamJob(init: InferInit): Promise<number> {
  const { client, output, signal } = init;
  signal.throwIfAborted();
  const { id } = await client.submitJob(init.request);
  const onAbort = (): void => {
    output.narrate('keeper', `cancelling job ${id}`);
    client.cancelJob(id).catch(() => undefined);
  };
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    // The stream is not tied to `signal`: after a cancel we still read to the job's final event.
    for await (const event of client.jobEvents(id)) {
      output.event(event);
      if (event.type === 'error') return RbeeError.fromJSON(event.error).exitCode;
    }
    return 0;
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

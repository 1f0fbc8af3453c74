/**
 * Runs the commands the reducer queued (pull, spawn, stop, cancel, place, chat) against the NodeClient and
 * reports back as actions. No decisions live here: only calls and their results.
 */
import { toRbeeError } from '../../shared/errors.js';
import type { JobRequest } from '../../shared/wire.js';
import type { NodeClient } from '../../node/client/index.js';
import type { Command, DashboardAction, Outgoing } from './state.js';

export interface CommandRunnerInit {
  client: NodeClient;
  /** Receives results and chat progress in order (the app passes its frame batcher). */
  dispatch: (action: DashboardAction) => void;
  /** Defaults to Date.now. */
  now?: () => number;
}

export interface CommandRunner {
  run(outgoing: Outgoing): void;
  /** Stops reading streams and asks the node to cancel chat jobs still running (waits ≤ 1 s). */
  dispose(): Promise<void>;
}

interface ChatRun {
  jobId: string | undefined;
  cancelRequested: boolean;
}

const CANCEL_ON_EXIT_MS = 1_000;

export function createCommandRunner(init: CommandRunnerInit): CommandRunner {
  const { client, dispatch } = init;
  const now = init.now ?? Date.now;
  const lifetime = new AbortController();
  const signal = lifetime.signal;
  const chats = new Map<number, ChatRun>();

  const report = (ok: boolean, text: string): void => {
    if (!signal.aborted) dispatch({ type: 'command-result', ok, text, ts: now() });
  };

  async function simple(command: Exclude<Command, { kind: 'chat' | 'cancel-chat' }>): Promise<void> {
    try {
      switch (command.kind) {
        case 'pull': {
          // Resolves when the model is on disk; progress meanwhile arrives as `downloads` events.
          const done = await client.pullModel(command.ref, { signal });
          return report(
            true,
            done.cached ? `${done.model.name} was already on disk` : `pulled ${done.model.name}`,
          );
        }
        case 'spawn': {
          // Resolves once the worker is ready (after a download if the model had to be fetched).
          const { worker } = await client.spawnWorker(command.model, { signal });
          return report(true, `worker ${worker.id} ready for ${command.model}`);
        }
        case 'stop-worker':
          await client.stopWorker(command.id, { signal });
          return report(true, `worker ${command.id} stopped`);
        case 'place': {
          // answered as the preview's content, not as a notice
          try {
            const preview = await client.place(command.model, { signal });
            if (!signal.aborted) dispatch({ type: 'place-result', model: command.model, preview });
          } catch (error) {
            if (signal.aborted) return;
            const e = toRbeeError(error);
            dispatch({ type: 'place-result', model: command.model, error: `${e.code}: ${e.message}` });
          }
          return;
        }
        case 'cancel-job': {
          // the job's entry node cancels it, whichever node of the cluster that is
          const done = await client.cancelClusterJob(command.id, { signal });
          return report(
            true,
            done.cancelling
              ? `job ${command.id} cancelled (entered through ${done.entry.name})`
              : `job ${command.id} had already ended: ${done.state}`,
          );
        }
      }
    } catch (error) {
      const e = toRbeeError(error);
      report(false, `${command.kind} failed: ${e.code}: ${e.message}`);
    }
  }

  function cancelJob(id: string): void {
    client.cancelJob(id, { signal }).catch((error: unknown) => {
      const e = toRbeeError(error);
      report(false, `cancel failed: ${e.code}: ${e.message}`);
    });
  }

  async function chat(turnId: number, request: JobRequest): Promise<void> {
    const run: ChatRun = { jobId: undefined, cancelRequested: false };
    chats.set(turnId, run);
    try {
      const { id } = await client.submitJob(request, { signal });
      run.jobId = id;
      dispatch({ type: 'chat-accepted', turnId, jobId: id });
      if (run.cancelRequested) cancelJob(id);
      // After a cancel the stream is still read to its final event, which says how the job ended.
      for await (const event of client.jobEvents(id, { signal })) {
        if (event.type === 'token') dispatch({ type: 'chat-tokens', turnId, text: event.text });
        else if (event.type === 'narration') dispatch({ type: 'chat-status', jobId: id, text: event.text });
        else {
          if (event.type === 'done') dispatch({ type: 'chat-done', turnId, event });
          else dispatch({ type: 'chat-failed', turnId, error: event.error });
          return;
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      dispatch({ type: 'chat-failed', turnId, error: toRbeeError(error).toJSON() });
    } finally {
      chats.delete(turnId);
    }
  }

  return {
    run({ command }) {
      if (signal.aborted) return;
      switch (command.kind) {
        case 'chat':
          void chat(command.turnId, command.request);
          return;
        case 'cancel-chat': {
          const run = chats.get(command.turnId);
          if (run === undefined) return;
          run.cancelRequested = true;
          if (run.jobId !== undefined) cancelJob(run.jobId);
          return;
        }
        default:
          void simple(command);
      }
    },
    async dispose() {
      const running = [...chats.values()].flatMap((r) => (r.jobId === undefined ? [] : [r.jobId]));
      lifetime.abort();
      const deadline = AbortSignal.timeout(CANCEL_ON_EXIT_MS);
      await Promise.allSettled(running.map((id) => client.cancelJob(id, { signal: deadline })));
    },
  };
}

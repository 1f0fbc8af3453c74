/** Shared bits: health words, worker state tokens, and device labels. */
import type { HiveView, WorkerView } from '../../../shared/view.js';
import type { ThemeToken } from '../theme.js';

export function healthToken(health: HiveView['health'] | 'starting' | 'ready' | 'degraded'): ThemeToken {
  return health === 'ready' ? 'ok' : health === 'unreachable' ? 'error' : 'warn';
}

export function workerStateToken(state: WorkerView['state']): ThemeToken {
  switch (state) {
    case 'idle':
      return 'ok';
    case 'busy':
      return 'accent';
    case 'loading':
    case 'stopping':
      return 'warn';
    case 'unhealthy':
      return 'error';
    case 'exited':
      return 'muted';
  }
}

/** "CPU" or "GPU0 cuda": what a person calls the device a worker runs on. */
export function deviceLabel(worker: Pick<WorkerView, 'backend' | 'device'>): string {
  return worker.backend === 'cpu' || worker.device < 0 ? 'CPU' : `GPU${worker.device} ${worker.backend}`;
}

/**
 * A small typed emitter. `on` returns its own unsubscribe function so that callers cannot forget
 * which listener to remove, and a throwing listener never breaks the emitter or its other listeners.
 */
export type Listener<T> = (payload: T) => void;

export interface Emitter<Events extends Record<string, unknown>> {
  on<K extends keyof Events>(type: K, listener: Listener<Events[K]>): () => void;
  off<K extends keyof Events>(type: K, listener: Listener<Events[K]>): void;
  emit<K extends keyof Events>(type: K, payload: Events[K]): void;
  listenerCount(type: keyof Events): number;
  clear(): void;
}

export function createEmitter<Events extends Record<string, unknown>>(
  onListenerError: (error: unknown) => void = () => undefined,
): Emitter<Events> {
  const listeners = new Map<keyof Events, Set<Listener<never>>>();
  const emitter: Emitter<Events> = {
    on(type, listener) {
      let set = listeners.get(type);
      if (set === undefined) {
        set = new Set();
        listeners.set(type, set);
      }
      set.add(listener);
      return () => emitter.off(type, listener);
    },
    off(type, listener) {
      listeners.get(type)?.delete(listener);
    },
    emit(type, payload) {
      const set = listeners.get(type);
      if (set === undefined) return;
      for (const listener of [...set]) {
        try {
          (listener as Listener<typeof payload>)(payload);
        } catch (error) {
          onListenerError(error);
        }
      }
    },
    listenerCount(type) {
      return listeners.get(type)?.size ?? 0;
    },
    clear() {
      listeners.clear();
    },
  };
  return emitter;
}

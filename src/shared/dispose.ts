/**
 * One teardown order for a composed service: each part registers how it is disposed as it is
 * created, and `dispose()` runs those steps in reverse order of creation, once, each failure logged
 * and never stopping the steps after it.
 */
export interface DisposeChain {
  /** Registers a step; steps run last-added first. */
  add(name: string, step: () => unknown): void;
  /** Runs every step once, in reverse order; later calls return the same promise. */
  dispose(): Promise<void>;
}

export function createDisposeChain(onError: (name: string, error: unknown) => void): DisposeChain {
  const steps: { name: string; step: () => unknown }[] = [];
  let disposing: Promise<void> | undefined;
  return {
    add(name, step) {
      steps.push({ name, step });
    },
    dispose() {
      disposing ??= (async () => {
        for (const { name, step } of steps.reverse()) {
          try {
            await step();
          } catch (error) {
            onError(name, error);
          }
        }
      })();
      return disposing;
    },
  };
}

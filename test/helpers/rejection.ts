import { RbeeError } from '../../src/shared/errors.js';

/** The RbeeError a promise rejects with (fails the test if it resolves or rejects with something else). */
export async function rejection(promise: Promise<unknown>): Promise<RbeeError> {
  const outcome = await promise.then(
    () => new Error('expected a rejection'),
    (error: unknown) => error,
  );
  if (!(outcome instanceof RbeeError)) throw outcome instanceof Error ? outcome : new Error(String(outcome));
  return outcome;
}

/** A single-consumer queue of one request's chunks, between the worker's messages and generate()'s reader. */
import type { RbeeError } from '../../shared/errors.js';
import type { GenerateChunk } from '../types.js';

export interface Channel {
  push(chunk: GenerateChunk): void;
  fail(error: RbeeError): void;
  next(): Promise<GenerateChunk>;
}

/** Failed at most once; a failure drops whatever was queued and reaches the reader at once. */
export function createChannel(): Channel {
  const items: GenerateChunk[] = [];
  let failure: RbeeError | undefined;
  let waiter: { resolve: (c: GenerateChunk) => void; reject: (e: RbeeError) => void } | undefined;
  return {
    push(chunk) {
      if (failure !== undefined) return;
      if (waiter === undefined) items.push(chunk);
      else {
        waiter.resolve(chunk);
        waiter = undefined;
      }
    },
    fail(error) {
      if (failure !== undefined) return;
      failure = error;
      items.length = 0;
      waiter?.reject(error);
      waiter = undefined;
    },
    next() {
      const item = items.shift();
      if (item !== undefined) return Promise.resolve(item);
      if (failure !== undefined) return Promise.reject(failure);
      return new Promise((resolve, reject) => {
        waiter = { resolve, reject };
      });
    },
  };
}

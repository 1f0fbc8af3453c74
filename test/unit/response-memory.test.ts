import { describe, expect, it } from 'vitest';
import { createResponseMemory } from '../../src/node/api/openai-responses.js';

const turn = (content: string) => [{ role: 'user' as const, content }];

describe('response memory (previous_response_id)', () => {
  it('forgets the oldest past its count, its text bound and its age', () => {
    let clock = 0;
    const memory = createResponseMemory({ maxResponses: 2, maxChars: 10, retainMs: 1000, now: () => clock });
    memory.remember('a', turn('aaa'));
    memory.remember('b', turn('bbb'));
    memory.remember('c', turn('ccc'));
    expect(memory.recall('a')).toBeUndefined(); // count
    expect(memory.recall('b')).toEqual(turn('bbb'));
    memory.remember('d', turn('dddddddd'));
    expect(memory.recall('b')).toBeUndefined(); // text: 3 + 3 + 8 > 10
    expect(memory.recall('c')).toBeUndefined();
    expect(memory.recall('d')).toEqual(turn('dddddddd'));
    clock = 1000;
    expect(memory.recall('d')).toBeUndefined(); // age
  });
});

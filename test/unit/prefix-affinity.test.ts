/**
 * Prefix affinity where the prompt is: which published workers keep the start of a chat cached.
 */
import { describe, expect, it } from 'vitest';
import { prefixAffinity } from '../../src/node/queen/index.js';
import { messagePrefixHashes, textPrefixHash, type PrefixKey } from '../../src/shared/prefix.js';
import type { ChatMessage } from '../../src/shared/wire.js';
import { hive, MODEL } from '../helpers/hive-state.js';

const turn1: ChatMessage[] = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Name a colour.' },
];
const answered: ChatMessage[] = [...turn1, { role: 'assistant', content: 'Teal.' }];
const turn2: ChatMessage[] = [...answered, { role: 'user', content: 'Another?' }];

/** The keys a worker publishes for a slot that answered turn 1 (see shared/prefix.ts). */
const keysAfterTurn1 = (): PrefixKey[] => {
  const hashes = messagePrefixHashes(answered);
  return [
    { kind: 'messages', length: 1, hash: hashes[0]!, tokens: 12 },
    { kind: 'messages', length: 2, hash: hashes[1]!, tokens: 30 },
    { kind: 'messages', length: 3, hash: hashes[2]!, tokens: 36 },
  ];
};

describe('prefix affinity', () => {
  it('finds the worker whose slot answered the chat’s last turn, with the most tokens matched', () => {
    const hives = [
      hive({ id: 'a', models: [MODEL], workers: [{ id: 'cold', prefixes: [] }] }),
      hive({ id: 'b', models: [MODEL], workers: [{ id: 'warm', prefixes: keysAfterTurn1() }] }),
      // the same system prompt only: a shorter match
      hive({ id: 'c', models: [MODEL], workers: [{ id: 'system', prefixes: keysAfterTurn1().slice(0, 1) }] }),
      // another model's worker never counts
      hive({ id: 'd', workers: [{ id: 'other', model: 'other', prefixes: keysAfterTurn1() }] }),
    ];
    expect(prefixAffinity({ messages: turn2 }, MODEL, hives)).toEqual([
      { worker: 'warm', tokens: 36 },
      { worker: 'system', tokens: 12 },
    ]);
  });

  it('keys a job’s system prompt and bare prompt as the worker does', () => {
    const hashes = messagePrefixHashes([
      { role: 'system', content: 'S' },
      { role: 'user', content: 'hi' },
    ]);
    const hives = [
      hive({
        id: 'a',
        models: [MODEL],
        workers: [{ id: 'w', prefixes: [{ kind: 'messages', length: 2, hash: hashes[1]!, tokens: 9 }] }],
      }),
    ];
    expect(prefixAffinity({ system: 'S', prompt: 'hi' }, MODEL, hives)).toEqual([{ worker: 'w', tokens: 9 }]);
    expect(prefixAffinity({ prompt: 'hi' }, MODEL, hives)).toEqual([]);
  });

  it('matches a raw prompt by its text', () => {
    const text = 'Once upon a time';
    const hives = [
      hive({
        id: 'a',
        models: [MODEL],
        workers: [
          { id: 'w', prefixes: [{ kind: 'text', length: 4, hash: textPrefixHash(text, 4), tokens: 2 }] },
        ],
      }),
    ];
    expect(prefixAffinity({ raw: true, prompt: text }, MODEL, hives)).toEqual([{ worker: 'w', tokens: 2 }]);
    expect(prefixAffinity({ raw: true, prompt: 'Twice upon' }, MODEL, hives)).toEqual([]);
  });
});

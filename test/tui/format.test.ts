import { describe, expect, it } from 'vitest';
import { createGrowingWrap, wrapText } from '../../src/tui/dashboard/format.js';

/** A small deterministic generator, so a failure names a reproducible seed. */
function random(seed: number): () => number {
  let s = seed;
  return () => (s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
}

const PIECES = [
  'a',
  'word',
  ' ',
  '  ',
  '\n',
  '\n\n',
  'unbreakablyverylongwordthatneedschunks',
  '.',
  ' x',
  '\t',
];

describe('wrapText', () => {
  it('wraps at word boundaries, keeps newlines, and cuts words longer than the width', () => {
    expect(wrapText('the quick brown fox', 10)).toEqual(['the quick', 'brown fox']);
    expect(wrapText('one\n\ntwo', 10)).toEqual(['one', '', 'two']);
    expect(wrapText('abcdefghij klm', 4)).toEqual(['abcd', 'efgh', 'ij', 'klm']);
  });
});

describe('createGrowingWrap', () => {
  it('gives what wrapping the whole text gives, at every step of a text that grows', () => {
    for (let seed = 1; seed <= 40; seed += 1) {
      const next = random(seed);
      const width = 3 + Math.floor(next() * 30);
      const wrap = createGrowingWrap();
      let text = '';
      for (let step = 0; step < 150; step += 1) {
        // Tokens arrive as whole pieces or as fragments of one.
        const piece = PIECES[Math.floor(next() * PIECES.length)] ?? '';
        text += next() < 0.3 ? piece.slice(0, 1 + Math.floor(next() * piece.length)) : piece;
        expect(wrap(text, width), `seed ${seed}, step ${step}, width ${width}`).toEqual(
          wrapText(text, width),
        );
      }
    }
  });

  it('starts over when the width changes or the text is not a continuation', () => {
    const wrap = createGrowingWrap();
    expect(wrap('hello brave new world', 11)).toEqual(['hello brave', 'new world']);
    expect(wrap('hello brave new world', 5)).toEqual(wrapText('hello brave new world', 5));
    expect(wrap('goodbye', 5)).toEqual(['goodb', 'ye']);
  });
});

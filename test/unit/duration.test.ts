import { describe, expect, it } from 'vitest';
import { parseKeepAlive } from '../../src/shared/duration.js';

describe('parseKeepAlive (Ollama semantics)', () => {
  it.each([
    [300, 300],
    [0, 0],
    [-1, -1],
    [-5, -1],
    ['0', 0],
    ['-1', -1],
    ['90s', 90],
    ['5m', 300],
    ['1h30m', 5400],
    ['1.5m', 90],
    ['250ms', 0.25],
    ['-1m', -1],
  ])('%s → %s s', (input, seconds) => {
    expect(parseKeepAlive(input)).toBe(seconds);
  });

  it.each(['', 'soon', '5 minutes', '5x', 'm5'])('refuses %j with BAD_REQUEST', (input) => {
    expect(() => parseKeepAlive(input)).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }));
  });
});

import { RbeeError } from './errors.js';

const UNITS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600 };

/**
 * Parses a keep-alive as Ollama does: a number of seconds, or a duration such as "90s", "5m",
 * "1h30m"; any negative value means "never unload", 0 means "unload right after the request".
 * Returns seconds (-1 for never).
 */
export function parseKeepAlive(value: number | string): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new RbeeError('BAD_REQUEST', 'keep-alive must be a finite number');
    return value < 0 ? -1 : value;
  }
  const text = value.trim();
  if (/^-?\d+(\.\d+)?$/.test(text)) return parseKeepAlive(Number(text));
  if (text.startsWith('-')) return -1;
  const parts = [...text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== text) {
    throw new RbeeError('BAD_REQUEST', `keep-alive "${value}" is not a duration (like 30s, 5m, 1h, 0 or -1)`);
  }
  return parts.reduce((total, [, n, unit]) => total + Number(n) * (UNITS[unit ?? 's'] ?? 1), 0);
}

/**
 * A line cache that outlives Ink's frames. Ink turns every line of every frame into styled cells
 * (ANSI tokenizing, one object per character) through a cache that lives for one frame only. The
 * dashboard redraws a screen whose lines mostly did not change (while tokens stream, only the
 * transcript's last line does), so keeping that cache across frames removes a third of each frame's
 * work (bench:tui). Ink exposes no hook for this: the cache's method is wrapped on its prototype.
 * Should a future Ink change that shape, nothing breaks; frames just cost what they cost before,
 * and `installInkLineCache` says so by returning false.
 */

type StyledChars = readonly unknown[];
interface OutputCaches {
  getStyledChars: (this: OutputCaches, line: string) => StyledChars;
}
type OutputClass = new (size: { width: number; height: number }) => { caches?: unknown };

/** Lines kept per generation; a 120×40 dashboard frame has about 100 distinct lines. */
const GENERATION_SIZE = 1024;

let installed: { hits: number; misses: number } | undefined;

function isOutputCaches(value: unknown): value is OutputCaches {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Partial<OutputCaches>).getStyledChars === 'function'
  );
}

/**
 * Wraps Ink's per-frame line cache with one shared by all frames of this process (two generations of
 * GENERATION_SIZE lines, so memory stays bounded). Idempotent; resolves to whether it is in place.
 */
export async function installInkLineCache(): Promise<boolean> {
  if (installed !== undefined) return true;
  let Output: OutputClass;
  try {
    const url = new URL('./output.js', import.meta.resolve('ink'));
    ({ default: Output } = (await import(url.href)) as { default: OutputClass });
  } catch {
    return false;
  }
  const caches: unknown = new Output({ width: 1, height: 1 }).caches;
  if (!isOutputCaches(caches)) return false;
  const proto: unknown = Object.getPrototypeOf(caches);
  if (!isOutputCaches(proto)) return false;
  const perFrame = proto.getStyledChars;
  const stats = { hits: 0, misses: 0 };
  let young = new Map<string, StyledChars>();
  let old = new Map<string, StyledChars>();
  proto.getStyledChars = function getStyledChars(this: OutputCaches, line: string): StyledChars {
    let chars = young.get(line);
    if (chars !== undefined) {
      stats.hits += 1;
      return chars;
    }
    chars = old.get(line);
    if (chars === undefined) {
      stats.misses += 1;
      chars = perFrame.call(this, line);
    } else stats.hits += 1;
    if (young.size >= GENERATION_SIZE) {
      old = young;
      young = new Map();
    }
    young.set(line, chars);
    return chars;
  };
  installed = stats;
  return true;
}

/** Lookups served from the shared cache and computed afresh, since installation (for tests). */
export function inkLineCacheStats(): { hits: number; misses: number } | undefined {
  return installed === undefined ? undefined : { ...installed };
}

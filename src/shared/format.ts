/** Bytes as MiB for people: `mib(1536 * 1024)` → "1.5 MiB"; `digits` 0 for whole MiB. */
export function mib(bytes: number, digits = 1): string {
  return `${(bytes / 2 ** 20).toFixed(digits)} MiB`;
}

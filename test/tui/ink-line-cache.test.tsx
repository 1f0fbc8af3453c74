import { cleanup, render } from 'ink-testing-library';
import { afterEach, describe, expect, it } from 'vitest';
import { Screen } from '../../src/tui/dashboard/components/screen.js';
import { inkLineCacheStats, installInkLineCache } from '../../src/tui/dashboard/ink-line-cache.js';
import { applyKey } from '../../src/tui/dashboard/keymap.js';
import { createInitialState, reduce, type DashboardState } from '../../src/tui/dashboard/state.js';
import { ThemeContext, colorTheme } from '../../src/tui/dashboard/theme.js';
import { NOW, threeHives } from '../fixtures/cluster-views.js';

afterEach(() => cleanup());

/** Frames of a chat answer streaming in, then the cluster view: what the dashboard draws all day. */
function frames(): string[] {
  let state: DashboardState = createInitialState({ now: NOW });
  state = reduce(state, { type: 'node-events', events: [{ type: 'snapshot', view: threeHives }] });
  state = reduce(state, { type: 'connection', connection: { status: 'live' } });
  state = applyKey(state, { name: '5', text: '5' });
  state = reduce(state, { type: 'chat-edit', edit: { insert: 'hello' } });
  state = applyKey(state, { name: 'enter', text: '' });
  state = reduce(state, { type: 'chat-accepted', turnId: 1, jobId: 'j' });
  const out: string[] = [];
  const draw = (): void => {
    const { lastFrame } = render(
      <ThemeContext.Provider value={colorTheme}>
        <Screen state={state} width={120} height={40} />
      </ThemeContext.Provider>,
    );
    out.push(lastFrame() ?? '');
  };
  for (let i = 0; i < 30; i += 1) {
    state = reduce(state, { type: 'chat-tokens', turnId: 1, text: `token ${i} of a streaming answer, ` });
    draw();
  }
  state = applyKey(state, { name: '1', text: '1' });
  draw();
  return out;
}

describe('the Ink line cache', () => {
  it('draws the same frames, and serves unchanged lines from the cache', async () => {
    const before = frames();
    expect(await installInkLineCache()).toBe(true);
    const after = frames();
    expect(after).toEqual(before);
    const stats = inkLineCacheStats();
    // Ink 6.8 offers the hook this relies on; an Ink without it fails here, not silently.
    expect(stats).toBeDefined();
    expect(stats?.hits ?? 0).toBeGreaterThan(stats?.misses ?? 0);
    expect(await installInkLineCache()).toBe(true);
  });
});

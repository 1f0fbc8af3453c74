/** Recognizing tool calls in an answer's text, whole and as it streams (src/node/api/openai-tools.ts). */
import { describe, expect, it } from 'vitest';
import { ToolStream, recognizeCalls, toolAnswer, type ToolPlan } from '../../src/node/api/openai-tools.js';

const tools = [
  { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } },
  { name: 'set_lights', parameters: { type: 'object', properties: { on: { type: 'boolean' } } } },
];
const auto: ToolPlan = { tools, forced: false, parallel: true };

/** Every event of `text` fed in pieces of `size` characters. */
function streamed(plan: ToolPlan, text: string, size: number): ReturnType<ToolStream['feed']> {
  const stream = new ToolStream(plan);
  const events = [];
  for (let i = 0; i < text.length; i += size) events.push(...stream.feed(text.slice(i, i + size)));
  return [...events, ...stream.end()];
}

describe('tool calls in answers', () => {
  it('reads forced calls as they stream, the same whatever the pieces', () => {
    const plan: ToolPlan = { tools, forced: true, parallel: true };
    const text =
      '[{"name": "get_weather", "arguments": {"city": "a \\"}\\" b"}}, {"name":"set_lights","arguments":{"on":true}}]';
    for (const size of [1, 3, 7, text.length]) {
      const events = streamed(plan, text, size);
      const calls = events.filter((e) => e.type === 'call').map((e) => e.type === 'call' && e.name);
      expect(calls).toEqual(['get_weather', 'set_lights']);
      const args = [0, 1].map((i) =>
        events.map((e) => (e.type === 'arguments' && e.index === i ? e.fragment : '')).join(''),
      );
      expect(args).toEqual(['{"city": "a \\"}\\" b"}', '{"on":true}']);
    }
  });

  it('recognizes a free answer that is a call, bare or tagged, and leaves other text alone', () => {
    expect(recognizeCalls(' {"name":"set_lights","arguments":{"on":false}} ', auto)?.[0]?.function).toEqual({
      name: 'set_lights',
      arguments: '{"on":false}',
    });
    const tagged = '<tool_call>\n{"name":"get_weather","arguments":{"city":"x"}}\n</tool_call>';
    expect(recognizeCalls(tagged + tagged, auto)).toHaveLength(2);
    expect(recognizeCalls(tagged + tagged, { ...auto, parallel: false })).toBeUndefined();
    expect(recognizeCalls('{"name":"unknown","arguments":{}}', auto)).toBeUndefined();
    expect(recognizeCalls('{"a": 1}', auto)).toBeUndefined();
    expect(recognizeCalls('Sure: {"name":"set_lights","arguments":{}}', auto)).toBeUndefined();
  });

  it('streams free text at once, and holds back what could be a call until the end', () => {
    expect(streamed(auto, 'Hello there', 2).map((e) => e.type === 'text' && e.text)).toEqual([
      'He',
      'll',
      'o ',
      'th',
      'er',
      'e',
    ]);
    const held = new ToolStream(auto);
    expect(held.feed(' <tool')).toEqual([]);
    expect(held.feed('_call>{"name":"set_lights","arguments":{"on":true}}</tool_call>')).toEqual([]);
    expect(held.end().map((e) => e.type)).toEqual(['call', 'arguments']);
    // a held answer that is not a call after all comes out as text
    expect(streamed(auto, '{not json', 3)).toEqual([{ type: 'text', text: '{not json' }]);
  });

  it('answers whole with finish reason tool_calls only when there are calls', () => {
    expect(toolAnswer('{"name":"set_lights","arguments":{"on":true}}', auto, 'stop').finish).toBe(
      'tool_calls',
    );
    expect(toolAnswer('plain', auto, 'stop')).toEqual({
      message: { role: 'assistant', content: 'plain' },
      finish: 'stop',
    });
  });
});

/**
 * How Ollama's requests become rbee's job fields: tool results find the calls they answer (Ollama
 * names the function, not a call id), and options map to sampling with Ollama's "no value" numbers.
 */
import { describe, expect, it } from 'vitest';
import { chatSchema, parse, samplingOf, toMessages } from '../../src/node/api/ollama-shapes.js';

const messages = (body: unknown) => toMessages(parse(chatSchema, body).messages ?? []);

describe('Ollama messages', () => {
  it('gives each call an id and each tool result the id of the call it answers by name', () => {
    const mapped = messages({
      model: 'm',
      messages: [
        { role: 'user', content: 'Weather and time in Paris?' },
        {
          role: 'assistant',
          content: '',
          tool_calls: [
            { function: { name: 'get_weather', arguments: { city: 'Paris' } } },
            { function: { name: 'get_time', arguments: { city: 'Paris' } } },
          ],
        },
        // answered out of order: matched by name, not position
        { role: 'tool', tool_name: 'get_time', content: '12:00' },
        { role: 'tool', tool_name: 'get_weather', content: 'sunny' },
      ],
    });
    const calls = mapped[1]!.toolCalls!;
    expect(calls.map((c) => [c.name, JSON.parse(c.arguments) as unknown])).toEqual([
      ['get_weather', { city: 'Paris' }],
      ['get_time', { city: 'Paris' }],
    ]);
    expect(new Set(calls.map((c) => c.id)).size).toBe(2);
    expect(mapped[2]).toEqual({ role: 'tool', content: '12:00', toolCallId: calls[1]!.id });
    expect(mapped[3]).toEqual({ role: 'tool', content: 'sunny', toolCallId: calls[0]!.id });
  });

  it('answers unnamed results in the order of the calls, and keeps ids a client sent', () => {
    const mapped = messages({
      model: 'm',
      messages: [
        {
          role: 'assistant',
          content: '',
          tool_calls: [
            { id: 'a1', function: { name: 'f', arguments: {} } },
            { id: 'a2', function: { name: 'f', arguments: {} } },
          ],
        },
        { role: 'tool', content: 'first' },
        { role: 'tool', content: 'second', tool_call_id: 'a2' },
      ],
    });
    expect(mapped.slice(1).map((m) => m.toolCallId)).toEqual(['a1', 'a2']);
  });

  it('refuses images', () => {
    expect(() =>
      messages({ model: 'm', messages: [{ role: 'user', content: 'x', images: ['aGk='] }] }),
    ).toThrow(/images are not supported/);
  });
});

describe('Ollama options', () => {
  it('maps options (num_ctx to the least context), format and keep_alive to the job', () => {
    expect(
      samplingOf({
        options: {
          num_predict: 12,
          temperature: 0.2,
          top_p: 0.9,
          top_k: 40,
          seed: 7,
          stop: ['\n\n', ''],
          repeat_penalty: 1.1,
          num_ctx: 4096,
          mirostat: 0,
        },
        format: 'json',
        keep_alive: '5m',
      }),
    ).toEqual({
      maxTokens: 12,
      contextSize: 4096,
      temperature: 0.2,
      topP: 0.9,
      topK: 40,
      seed: 7,
      stop: ['\n\n'],
      repeatPenalty: 1.1,
      jsonSchema: { type: 'object' },
      keepAlive: '5m',
    });
  });

  it("reads Ollama's 'no value' numbers as no value", () => {
    // num_predict -1: no limit; seed -1: random
    expect(samplingOf({ options: { num_predict: -1, seed: -1 } })).toEqual({});
  });

  it('refuses a format it does not know and a keep_alive that is no duration', () => {
    expect(() => samplingOf({ format: 'yaml' })).toThrow(/format must be/);
    expect(() => samplingOf({ keep_alive: 'soon' })).toThrow(/not a duration/);
  });
});

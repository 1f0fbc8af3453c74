import { getLlama, LlamaCompletion, LlamaLogLevel, resolveChatWrapper } from 'node-llama-cpp';
import { preparePrompt } from '../src/engine/worker/prompt.js';
import { runGeneration } from '../src/engine/worker/run-generation.js';
import { ensureModel, median } from './bench-paths.js';
const M = (process.env.M ?? 'tiny') as 'tiny'; const T = Number(process.env.T ?? 256); const N = Number(process.env.N ?? 2);
const llama = await getLlama({ gpu: false, build: 'never', maxThreads: 1, logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: await ensureModel(M) });
const ctx = await model.createContext({ sequences: N, contextSize: 1024 * N, threads: 1, flashAttention: false });
const seqs = Array.from({ length: N }, () => ctx.getSequence());
const req = (i: number) => ({ prompt: `Story number ${i} begins`, maxTokens: T, temperature: 0 });
async function completion(i: number) { const s = seqs[i]!; await s.clearHistory(); const c = new LlamaCompletion({ contextSequence: s }); const p = preparePrompt(model, resolveChatWrapper(model), 1024, req(i)); let n = 0; await c.generateCompletionWithMeta(p.input, { onToken: (t) => (n += t.length), maxTokens: T, temperature: 0, repeatPenalty: false }); c.dispose({ disposeSequence: false }); return n; }
async function loop(i: number) { const s = seqs[i]!; const p = preparePrompt(model, resolveChatWrapper(model), 1024, req(i)); let n = 0; await runGeneration({ sequence: s, request: req(i), prompt: p, reuse: false, receivedAt: 0, signal: new AbortController().signal, onText: () => {}, onTokens: (t) => (n += t.length) }); return n; }
const R: Record<string, number[]> = { completion: [], loop: [] };
for (let r = 0; r <= 4; r++) for (const [k, f] of [['completion', completion], ['loop', loop]] as const) {
  const t0 = performance.now(); const ns = await Promise.all(seqs.map((_, i) => f(i))); const dt = performance.now() - t0;
  if (r > 0) R[k]!.push((ns.reduce((a, b) => a + b, 0) * 1000) / dt);
}
console.log(M, N, 'streams', Object.entries(R).map(([k, v]) => `${k} ${median(v).toFixed(1)} tok/s`).join(', '), 'ratio', (median(R.loop!) / median(R.completion!)).toFixed(3));

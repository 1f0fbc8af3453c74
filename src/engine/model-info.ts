/**
 * What a GGUF file says about itself, read from its header without loading any weights. Also the
 * check that a file is a whole GGUF: the header must parse and the file must be long enough to hold
 * every tensor it declares, so a truncated download is caught before a worker tries to mmap it.
 */
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import type * as LlamaCppModule from 'node-llama-cpp';
import type { GgmlType, GgufTensorInfo } from 'node-llama-cpp';
import { RbeeError, toRbeeError } from '../shared/errors.js';

/** node-llama-cpp, loaded on first use: importing it takes ~1 s, which the node's start need not wait for. */
type LlamaCpp = typeof LlamaCppModule;

export interface ModelInfo {
  /** `general.architecture`, e.g. "llama". */
  architecture: string;
  /** `general.name`, else the file name without `.gguf`. */
  name: string;
  /** From `general.file_type` (e.g. "Q4_K_M"), else the most common tensor type. */
  quantization: string;
  /** The context length the model was trained with. */
  contextLength: number;
  /** Sum of all tensors' element counts. */
  parameterCount?: number;
  /** `tokenizer.chat_template`: the Jinja template chats are rendered with, when the file has one. */
  chatTemplate?: string;
}

export interface ReadModelInfoOptions {
  signal?: AbortSignal;
}

export async function readModelInfo(path: string, options: ReadModelInfoOptions = {}): Promise<ModelInfo> {
  const { signal } = options;
  if (signal?.aborted === true) throw toRbeeError(signal.reason);
  let fileBytes: number;
  try {
    const stats = await stat(path);
    if (!stats.isFile()) throw new RbeeError('MODEL_INVALID', `${path} is not a regular file`);
    fileBytes = stats.size;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new RbeeError('MODEL_NOT_FOUND', `model file not found: ${path}`, {
        cause: error,
        details: { path },
      });
    }
    throw toRbeeError(error, 'MODEL_INVALID');
  }

  const llamaCpp = await import('node-llama-cpp');
  let info: Awaited<ReturnType<LlamaCpp['readGgufFileInfo']>>;
  try {
    info = await llamaCpp.readGgufFileInfo(path, {
      sourceType: 'filesystem',
      logWarnings: false,
      // Split models are out of scope: each part is checked as the whole file it claims to be.
      spliceSplitFiles: false,
      signal,
    });
  } catch (error) {
    if (isAborted(signal)) throw toRbeeError(signal?.reason);
    const why = (error as Error).message.replace(/[\u0000-\u001f\u007f]/g, '?');
    throw invalid(path, `not a readable GGUF file (${why})`, error);
  }

  // The parser reads zeros past the end of a file, so a cut header parses into garbage: check lengths first.
  if (info.infoEndOffset !== undefined && info.infoEndOffset > fileBytes) {
    throw invalid(path, `the file is truncated: ${fileBytes} bytes, its header needs ${info.infoEndOffset}`);
  }
  const metadata = info.metadata as {
    general?: { architecture?: unknown; name?: unknown; file_type?: unknown };
    tokenizer?: { chat_template?: unknown };
  };
  const architecture = metadata.general?.architecture;
  if (typeof architecture !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(architecture)) {
    throw invalid(path, 'the GGUF header has no valid general.architecture');
  }
  const contextLength = (info.architectureMetadata as { context_length?: unknown }).context_length;
  if (typeof contextLength !== 'number' || !(contextLength > 0)) {
    throw invalid(path, `the GGUF header has no ${architecture}.context_length`);
  }
  const tensors = info.tensorInfo ?? [];
  const needed = bytesNeeded(tensors, llamaCpp);
  if (needed > fileBytes) {
    throw invalid(path, `the file is truncated: ${fileBytes} bytes, its tensors need ${needed}`);
  }

  const name = metadata.general?.name;
  const result: ModelInfo = {
    architecture,
    name: typeof name === 'string' && name !== '' ? name : basename(path).replace(/\.gguf$/i, ''),
    quantization: quantizationName(metadata.general?.file_type, tensors, llamaCpp),
    contextLength,
  };
  if (tensors.length > 0) result.parameterCount = tensors.reduce((sum, t) => sum + elements(t), 0);
  const template = metadata.tokenizer?.chat_template;
  if (typeof template === 'string' && template !== '') result.chatTemplate = template;
  return result;
}

/** A function, so that TypeScript does not keep the narrowing from the check before the await. */
function isAborted(signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true;
}

function invalid(path: string, why: string, cause?: unknown): RbeeError {
  return new RbeeError('MODEL_INVALID', `${path}: ${why}`, { cause, details: { path } });
}

/** "MOSTLY_Q4_K_M" → "Q4_K_M", "ALL_F32" → "F32"; without file_type, the type holding most elements. */
function quantizationName(fileType: unknown, tensors: readonly GgufTensorInfo[], llamaCpp: LlamaCpp): string {
  if (typeof fileType === 'number') {
    const enumName = (llamaCpp.GgufFileType as Record<number, string | undefined>)[fileType];
    if (enumName !== undefined) return enumName.replace(/^(MOSTLY|ALL)_/, '');
  }
  const byType = new Map<number, number>();
  for (const tensor of tensors)
    byType.set(tensor.ggmlType, (byType.get(tensor.ggmlType) ?? 0) + elements(tensor));
  let best: number | undefined;
  for (const [type, count] of byType) if (best === undefined || count > (byType.get(best) ?? 0)) best = type;
  return best === undefined
    ? 'unknown'
    : ((llamaCpp.GgmlType as Record<number, string | undefined>)[best] ?? 'unknown');
}

function elements(tensor: GgufTensorInfo): number {
  return tensor.dimensions.reduce<number>((product, d) => product * Number(d), 1);
}

/** [elements per block, bytes per block] for ggml types, from ggml.c's type traits. */
let blocks: Partial<Record<GgmlType, readonly [number, number]>> | undefined;
function blocksOf(llamaCpp: LlamaCpp): Partial<Record<GgmlType, readonly [number, number]>> {
  const T = llamaCpp.GgmlType;
  blocks ??= {
    [T.F32]: [1, 4],
    [T.F16]: [1, 2],
    [T.BF16]: [1, 2],
    [T.F64]: [1, 8],
    [T.I8]: [1, 1],
    [T.I16]: [1, 2],
    [T.I32]: [1, 4],
    [T.I64]: [1, 8],
    [T.Q4_0]: [32, 18],
    [T.Q4_1]: [32, 20],
    [T.Q5_0]: [32, 22],
    [T.Q5_1]: [32, 24],
    [T.Q8_0]: [32, 34],
    [T.Q8_1]: [32, 36],
    [T.IQ4_NL]: [32, 18],
    [T.Q2_K]: [256, 84],
    [T.Q3_K]: [256, 110],
    [T.Q4_K]: [256, 144],
    [T.Q5_K]: [256, 176],
    [T.Q6_K]: [256, 210],
    [T.Q8_K]: [256, 292],
    [T.IQ2_XXS]: [256, 66],
    [T.IQ2_XS]: [256, 74],
    [T.IQ2_S]: [256, 82],
    [T.IQ3_XXS]: [256, 98],
    [T.IQ3_S]: [256, 110],
    [T.IQ1_S]: [256, 50],
    [T.IQ1_M]: [256, 56],
    [T.IQ4_XS]: [256, 136],
    [T.TQ1_0]: [256, 54],
    [T.TQ2_0]: [256, 66],
  };
  return blocks;
}

/**
 * The file length that the tensor table implies: the end of the furthest tensor. A tensor of a type
 * not in the table counts as one byte, which still catches a file cut before that tensor starts.
 */
function bytesNeeded(tensors: readonly GgufTensorInfo[], llamaCpp: LlamaCpp): number {
  const table = blocksOf(llamaCpp);
  let end = 0;
  for (const tensor of tensors) {
    const block = table[tensor.ggmlType];
    const size = block === undefined ? 1 : Math.ceil(elements(tensor) / block[0]) * block[1];
    end = Math.max(end, Number(tensor.fileOffset) + size);
  }
  return end;
}

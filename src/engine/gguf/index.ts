export {
  CHATML_TEMPLATE,
  generateTestModel,
  TEST_MODEL_SHAPES,
  type GenerateTestModelInit,
  type GenerateTestModelResult,
  type TestModelPreset,
  type TestModelShape,
} from './test-model.js';
export { encodeQ8_0, encodeTensorData, f16BitsToF32, f32ToF16Bits, type GgmlType } from './encoders.js';
export {
  elementCount,
  gguf,
  tensorByteSize,
  writeGguf,
  type GgufScalarType,
  type GgufTensorSpec,
  type GgufValue,
  type WriteGgufInit,
  type WriteGgufResult,
} from './writer.js';
export { buildTestVocab, SPECIAL_TOKENS, TOKEN_TYPE, type TestVocab } from './vocab.js';

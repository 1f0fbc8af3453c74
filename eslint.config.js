// @ts-check
import tseslint from 'typescript-eslint';
import reactHooks from 'eslint-plugin-react-hooks';

/** Dependency direction: shared ← engine, p2p ← node ← tui; main.ts wires them (README "Layout"). */
const restrict = (patterns) => ({
  'no-restricted-imports': ['error', { patterns }],
});
/** The folders of src/node, one per role, each with an index.ts that is its API (README "Layout"). */
const NODE_ROLES = ['models', 'hive', 'queen', 'cluster', 'jobs', 'api', 'store', 'client', 'view'];
const nativeFromTui = [
  { group: ['**/engine/**', '**/p2p/**'], message: 'tui/ never imports engine or p2p.' },
  {
    regex: 'node/(?!client/)',
    message: 'tui/ imports only node/client/ (no native code in the UI process).',
  },
  { group: ['better-sqlite3', 'node-llama-cpp', 'libp2p', '@libp2p/*'], message: 'No native code in tui/.' },
];

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', '.cache/', 'coverage/', 'eslint.config.js'] },
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { 'react-hooks': reactHooks },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/return-await': ['error', 'in-try-catch'],
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-console': 'error',
      'react-hooks/rules-of-hooks': 'error',
      'react-hooks/exhaustive-deps': 'warn',
    },
  },
  {
    files: ['src/shared/**'],
    rules: restrict([
      { group: ['**/engine/**', '**/p2p/**', '**/node/**', '**/tui/**'], message: 'shared/ is a leaf.' },
      {
        group: ['ink', 'react', 'better-sqlite3', 'node-llama-cpp', 'libp2p'],
        message: 'shared/ is a leaf.',
      },
    ]),
  },
  {
    files: ['src/engine/**'],
    rules: restrict([
      { group: ['**/p2p/**', '**/node/**', '**/tui/**'], message: 'engine/ depends on shared/ only.' },
      { group: ['ink', 'react', 'libp2p', '@libp2p/*'], message: 'engine/ does not use UI or p2p.' },
    ]),
  },
  {
    files: ['src/p2p/**'],
    rules: restrict([
      { group: ['**/engine/**', '**/node/**', '**/tui/**'], message: 'p2p/ depends on shared/ only.' },
      { group: ['ink', 'react', 'node-llama-cpp'], message: 'p2p/ does not use UI or the engine.' },
    ]),
  },
  {
    files: ['src/node/**'],
    rules: restrict([
      { group: ['**/tui/**'], message: 'node/ never imports tui/.' },
      { group: ['ink', 'react'], message: 'Only tui/ uses ink and react.' },
      {
        // each role folder's index.ts is its API: no reaching into another role's files
        regex: `^\\.\\.?/(${NODE_ROLES.join('|')})/(?!index\\.js$)`,
        message: "Import another role of node/ through its index.js (e.g. '../hive/index.js').",
      },
    ]),
  },
  { files: ['src/tui/**'], rules: restrict(nativeFromTui) },
  {
    files: ['test/**', 'scripts/**'],
    rules: {
      'no-console': 'off',
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/unbound-method': 'off',
    },
  },
);

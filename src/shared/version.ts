import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
/** The package version; src/shared and dist/shared both sit two levels under the package root. */
export const VERSION: string = (require('../../package.json') as { version: string }).version;

import '../../src/shared/polyfill.js';

/**
 * The node's HTTP API: the native job, model, worker and cluster routes, the OpenAI-compatible
 * routes, server-sent events, and API-key authentication.
 */
export { createApi, type ApiInit } from './server.js';
export { type AuthMode } from './auth.js';

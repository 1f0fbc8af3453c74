/**
 * What the node reports about itself and the cluster: the live view that dashboards and
 * `GET /v1/events` render, and the Prometheus metrics.
 */
export {
  createLiveView,
  type LiveView,
  type LiveViewInit,
  type ClusterSource,
  type Section,
} from './live-view.js';
export { createMetrics, type Metrics, type MetricsInit } from './metrics.js';

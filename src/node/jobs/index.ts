/**
 * Jobs: the manager (every accepted job, its event history and subscribers, cancel) and the router
 * that runs each job on a Hive and relays its events, and the placement preview (`rbee place`).
 */
export {
  createJobManager,
  type JobManager,
  type JobManagerInit,
  type JobContext,
  type JobSnapshot,
  type JobState,
  type SubmitOptions,
} from './job-manager.js';
export { createRouter, type RouterInit, type ClusterRouting } from './router.js';
export {
  cancelHere,
  createClusterJobs,
  type ClusterJobsApi,
  type ClusterJobsInit,
  type LocalJobs,
  type MemberAnswer,
  type MemberJobs,
  type Viewer,
} from './cluster-jobs.js';
export { createPlacePreview, type PlacePreviewInit, type PlacePreviewer } from './place-preview.js';

// The demo's public surface: a simulated pyATS job and the built-in reporter server that streams it.
export { simulatedJob, retimeJob, type SimulatedJobOptions } from './job.js';
export {
  startDemoReporter,
  DemoReporterError,
  type DemoReporter,
  type DemoReporterOptions,
} from './reporter-server.js';

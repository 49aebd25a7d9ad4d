// The demo's public surface: a simulated pyATS job, the built-in reporter server that streams it, and the
// server side of the reporter's request protocol (also the benchmarks' reporters).
export { simulatedJob, retimeJob, type SimulatedJobOptions } from './job.js';
export {
  startDemoReporter,
  DemoReporterError,
  type DemoReporter,
  type DemoReporterOptions,
} from './reporter-server.js';
export {
  SectionTree,
  answerRequest,
  unpicklableReply,
  type ClientState,
  type RequestAnswer,
} from './reporter-protocol.js';

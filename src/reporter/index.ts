// The pyATS reporter socket source: frames, the subscriber of one socket, discovery of sockets under a
// runinfo tree, and the decode thread that can run subscribers off the main thread.
export {
  FrameError,
  FrameReader,
  HeaderFormatError,
  detectHeader,
  encodeFrame,
  parseHeaderFormat,
  type HeaderFormat,
} from './framing.js';
export {
  ReporterSubscriber,
  type ConnectionInfo,
  type DisconnectReason,
  type ReporterSocketOptions,
} from './subscriber.js';
export { SocketDiscovery, type DiscoveredSubscriber, type SocketActivity } from './discovery.js';
export { DecodeThread } from './decode-thread.js';

// The pyATS reporter socket source: framing, the request protocol, the subscriber of one socket, discovery of sockets under a
// runinfo tree, and the decode thread that can run subscribers off the main thread.
export {
  FRAME_FORMATS,
  FrameError,
  FrameFormatError,
  FrameReader,
  detectFormat,
  encodeFrame,
  parseFrameFormat,
  type FrameFormat,
} from './framing.js';
export {
  childIds,
  describeValue,
  encodeRequest,
  replyError,
  snapshotEvents,
  type ReporterRequest,
} from './protocol.js';
export { ReporterProtocolError, fetchSnapshot } from './snapshot.js';
export { readRunContext } from './runinfo.js';
export {
  ReporterSubscriber,
  type ConnectionInfo,
  type DisconnectReason,
  type ReporterSocketOptions,
} from './subscriber.js';
export { SocketDiscovery, type DiscoveredSubscriber, type SocketActivity } from './discovery.js';
export { DecodeThread } from './decode-thread.js';

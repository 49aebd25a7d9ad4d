// Read pacing for stream sources (reporter sockets, the NDJSON ingest socket): one chunk per turn of the
// event loop, and no reading at all while the sinks say they are behind.

/** How often a held socket checks whether it may read again. */
export const HOLD_POLL_MS = 5;

/** The part of net.Socket pacing needs. */
export interface PausableStream {
  readonly destroyed: boolean;
  pause(): unknown;
  resume(): unknown;
}

/**
 * Call after handling one chunk. Stops reading until the next turn of the event loop: libuv hands over up to
 * 32 reads of 64 KiB in one go, and decoding them all before anything else runs would hold scrapes and span
 * exports back for tens of milliseconds. Then stays stopped while `holdWhile()` is true (read backpressure:
 * the writer waits instead of the exporter queueing without bound).
 */
export function yieldAfterChunk(socket: PausableStream, holdWhile?: () => boolean): void {
  if (socket.destroyed) return;
  socket.pause();
  const resume = (): void => {
    if (socket.destroyed) return;
    if (holdWhile?.() === true) setTimeout(resume, HOLD_POLL_MS);
    else socket.resume();
  };
  setImmediate(resume);
}

// Socket discovery (`--watch DIR`): finds pyATS `reporter.sock` files (or symlinks to them) under directory trees
// as jobs start, attaches one subscriber per socket, and detaches it when the job ends. Polling is the source of
// truth; inotify watches on a bounded set of directories only make a poll happen sooner.
import { watch, type Dirent, type FSWatcher } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { basename, dirname, resolve, sep } from 'node:path';
import type { Logger } from '../log.js';

/** What the subscriber created for a socket reports back, so discovery can tell a live job from a stale file. */
export interface SocketActivity {
  /** Call from the subscriber's `connected` handler. */
  connected(): void;
  /** Call from the subscriber's `disconnected` handler. */
  disconnected(): void;
}

/** The part of ReporterSubscriber discovery drives. */
export interface DiscoveredSubscriber {
  start(): void;
  stop(): Promise<void>;
}

/** ExporterHealth's hooks for the `pyats_exporter_reporter_up` series of each discovered socket. */
export interface DiscoveryHealth {
  setReporterWatched(path: string): void;
  setReporterUnwatched(path: string): void;
}

export interface SocketDiscoveryOptions {
  /** Directories to search (they may not exist yet). */
  roots: readonly string[];
  /** Makes (but does not start) the subscriber for a socket path; it must call `activity` from its handlers. */
  createSubscriber: (path: string, activity: SocketActivity) => DiscoveredSubscriber;
  logger: Logger;
  health?: DiscoveryHealth;
  /** File name of a reporter socket. Default `reporter.sock`. */
  socketName?: string;
  /**
   * Deepest a socket may sit below a root (`root/reporter.sock` is 1). Default 5: a virtualenv root, as in
   * `$VIRTUAL_ENV/users/<user>/runinfo/<job>/reporter.sock`.
   */
  maxDepth?: number;
  /** Poll of roots, runinfo containers, recently changed directories and known sockets. Default 1000 ms. */
  scanIntervalMs?: number;
  /** Walk of every directory within `maxDepth`, the safety net for anything a poll skipped. Default 60 s. */
  fullScanIntervalMs?: number;
  /** A directory unchanged for this long is dormant: only full scans look at it. Default 10 min. */
  dormantAfterMs?: number;
  /** A socket that has not accepted a connection for this long is a leftover: detach and ignore it. Default 30 s. */
  staleAfterMs?: number;
  /** After its socket is removed, how long an open connection may still deliver the job's last events. Default 30 s. */
  detachGraceMs?: number;
  /** Upper bound on inotify watches (roots, containers, young directories); beyond it polling alone is used. Default 128. */
  maxWatchers?: number;
  /** Upper bound on directories remembered; deeper or further ones are not searched. Default 100 000. */
  maxDirectories?: number;
  /** Use fs.watch as a trigger (Linux inotify). Default true. */
  watch?: boolean;
  /** Wall clock in epoch ms. */
  now?: () => number;
}

export interface DiscoveryStats {
  /** Directories remembered (within maxDepth). */
  directories: number;
  /** Open fs.watch handles. */
  watchers: number;
  /** Sockets with an attached subscriber. */
  sockets: number;
  /** Leftover sockets being ignored until they change. */
  staleSockets: number;
  scans: number;
  fullScans: number;
}

/** Why a subscriber was detached; logged. */
export type DetachReason = 'removed' | 'replaced' | 'stale' | 'stopped';

/** Files that only a job's runinfo directory holds: their directory's parent is a runinfo container. */
const JOB_DIR_MARKERS = new Set(['results.json', 'results.yaml']);
/** pyATS's own name for the directory that holds one runinfo directory per job. */
const CONTAINER_NAMES = new Set(['runinfo']);
/** Directory mtimes have jiffy granularity: a change this recent may not have moved the mtime yet. */
const RECENT_CHANGE_MS = 2_000;
/** fs.watch fires per file write in a watched directory; coalesce into one scan. */
const WATCH_DEBOUNCE_MS = 50;

/** Directories stat'ed (or sockets checked) at once during a scan. */
const SCAN_CONCURRENCY = 8;

interface DirVisit {
  path: string;
  depth: number;
}

interface DirEntry {
  depth: number;
  ino: number;
  mtimeMs: number;
  subdirs: string[];
  /** Names of entries called socketName (sockets or symlinks). */
  sockets: string[];
  /** Holds a socket or a results file: a job's runinfo directory. */
  jobDir: boolean;
  /** Has a job directory among its subdirectories: polled and watched even when old. */
  container: boolean;
  /** Its listing was read by the latest refresh. */
  listingChanged: boolean;
  watcher?: FSWatcher;
}

const NOT_CREATED: DiscoveredSubscriber = { start: () => undefined, stop: () => Promise.resolve() };

interface TrackedSocket {
  path: string;
  identity: string;
  subscriber: DiscoveredSubscriber;
  connected: boolean;
  /** Attach time, last connect or last disconnect: staleness counts from here. */
  lastActivityAt: number;
  removedAt?: number;
  detaching?: Promise<void>;
}

export class SocketDiscovery {
  private readonly roots: readonly string[];
  private readonly socketName: string;
  private readonly maxDepth: number;
  private readonly scanIntervalMs: number;
  private readonly fullScanIntervalMs: number;
  private readonly dormantAfterMs: number;
  private readonly staleAfterMs: number;
  private readonly detachGraceMs: number;
  private readonly maxWatchers: number;
  private readonly maxDirectories: number;
  private readonly useWatch: boolean;
  private readonly now: () => number;
  private readonly logger: Logger;

  private readonly dirs = new Map<string, DirEntry>();
  /** Roots' descendants polled every scan: runinfo containers and directories changed within dormantAfterMs. */
  private readonly live = new Map<string, DirEntry>();
  private readonly tracked = new Map<string, TrackedSocket>();
  /** Leftover socket path → the identity it had when found stale. */
  private readonly stale = new Map<string, string>();
  private watcherCount = 0;
  private started = false;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private rescanRequested = false;
  private lastFullScanAt = -Infinity;
  private scans = 0;
  private fullScans = 0;
  private warned = new Set<string>();

  constructor(private readonly options: SocketDiscoveryOptions) {
    this.roots = options.roots.map((root) => resolve(root));
    this.socketName = options.socketName ?? 'reporter.sock';
    this.maxDepth = options.maxDepth ?? 5;
    this.scanIntervalMs = options.scanIntervalMs ?? 1_000;
    this.fullScanIntervalMs = options.fullScanIntervalMs ?? 60_000;
    this.dormantAfterMs = options.dormantAfterMs ?? 600_000;
    this.staleAfterMs = options.staleAfterMs ?? 30_000;
    this.detachGraceMs = options.detachGraceMs ?? 30_000;
    this.maxWatchers = options.maxWatchers ?? 128;
    this.maxDirectories = options.maxDirectories ?? 100_000;
    this.useWatch = options.watch ?? true;
    this.now = options.now ?? Date.now;
    this.logger = options.logger;
  }

  /** Starts scanning (the first scan walks everything); does nothing if already started or stopped. */
  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    this.requestScan(0);
  }

  /** Stops scanning and watching, and stops every attached subscriber. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
    for (const entry of this.dirs.values()) this.unwatch(entry);
    await Promise.allSettled([...this.tracked.values()].map((t) => this.detach(t, 'stopped')));
  }

  /** Socket paths with an attached subscriber. */
  sockets(): string[] {
    return [...this.tracked.keys()];
  }

  stats(): DiscoveryStats {
    return {
      directories: this.dirs.size,
      watchers: this.watcherCount,
      sockets: this.tracked.size,
      staleSockets: this.stale.size,
      scans: this.scans,
      fullScans: this.fullScans,
    };
  }

  /** Runs one scan now (a full one if `full`), after any scan in progress; for tests and `SIGHUP`-style pokes. */
  async scanNow(full = false): Promise<void> {
    await this.running;
    if (this.stopped) return;
    if (full) this.lastFullScanAt = -Infinity;
    await this.runScan();
  }

  private requestScan(delayMs: number): void {
    if (this.stopped) return;
    if (this.running) {
      this.rescanRequested = true;
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.runScan();
    }, delayMs);
  }

  private runScan(): Promise<void> {
    this.running ??= (async () => {
      try {
        await this.scan();
      } catch (err) {
        this.logger.error({ err }, 'socket discovery scan failed');
      } finally {
        this.running = undefined;
      }
      if (this.stopped) return;
      const again = this.rescanRequested;
      this.rescanRequested = false;
      this.requestScan(again ? WATCH_DEBOUNCE_MS : this.scanIntervalMs);
    })();
    return this.running;
  }

  private async scan(): Promise<void> {
    const now = this.now();
    const full = now - this.lastFullScanAt >= this.fullScanIntervalMs;
    if (full) this.lastFullScanAt = now;
    this.scans++;
    if (full) this.fullScans++;
    const candidates = new Set<string>();
    const visited = new Set<string>();
    let level: DirVisit[] = this.roots.map((path) => ({ path, depth: 0 }));
    if (!full) for (const [path, entry] of this.live) level.push({ path, depth: entry.depth });
    // Level by level, a few directories at a time: bounded concurrency on the libuv thread pool.
    while (level.length > 0 && !this.stopped) {
      const next: DirVisit[] = [];
      await forEachLimited(level, SCAN_CONCURRENCY, async ({ path, depth }) => {
        if (visited.has(path)) return;
        visited.add(path);
        const entry = await this.refresh(path, depth, this.dirs.get(path), now);
        if (entry !== undefined) this.collect(path, entry, full, candidates, next);
      });
      level = next;
    }
    for (const path of this.tracked.keys()) candidates.add(path);
    if (full) for (const path of this.stale.keys()) candidates.add(path);
    await forEachLimited([...candidates], SCAN_CONCURRENCY, (path) => this.checkSocket(path));
  }

  /**
   * Notes a directory's sockets and queues the subdirectories to refresh: all of them in a full scan, else only
   * new ones (containers and young directories are visited from `live`; dormant ones wait for a full scan).
   */
  private collect(
    path: string,
    entry: DirEntry,
    full: boolean,
    candidates: Set<string>,
    out: DirVisit[],
  ): void {
    for (const name of entry.sockets) candidates.add(childPath(path, name));
    // An unchanged listing has no new subdirectories: a runinfo container of thousands costs nothing then.
    if (entry.depth + 1 >= this.maxDepth || (!full && !entry.listingChanged)) return;
    for (const name of entry.subdirs) {
      const child = childPath(path, name);
      if (this.dirs.has(child)) {
        if (full) out.push({ path: child, depth: entry.depth + 1 });
      } else if (this.dirs.size + out.length < this.maxDirectories) {
        out.push({ path: child, depth: entry.depth + 1 });
      } else {
        this.warnTooManyDirectories(child);
      }
    }
  }

  private async refresh(
    path: string,
    depth: number,
    cached: DirEntry | undefined,
    now: number,
  ): Promise<DirEntry | undefined> {
    let info;
    try {
      info = await stat(path);
    } catch (err) {
      this.forget(path);
      if (depth === 0) this.warnMissingRoot(path, err as NodeJS.ErrnoException);
      return undefined;
    }
    if (!info.isDirectory()) {
      this.forget(path);
      return undefined;
    }
    let entry = cached;
    if (entry === undefined || entry.ino !== info.ino) {
      if (entry) this.forget(path);
      entry = {
        depth,
        ino: info.ino,
        mtimeMs: Number.NaN,
        subdirs: [],
        sockets: [],
        jobDir: false,
        container: false,
        listingChanged: true,
      };
      this.dirs.set(path, entry);
    }
    // Watch before reading, so an entry created after the read still triggers a scan.
    this.updateWatch(path, entry, info.mtimeMs, now);
    const unchanged = entry.mtimeMs === info.mtimeMs && now - info.mtimeMs > RECENT_CHANGE_MS;
    entry.listingChanged = !unchanged;
    if (!unchanged) {
      await this.readDirectory(path, entry);
      // It may have just turned out to be a job directory, whose log writes a watch would report.
      this.updateWatch(path, entry, info.mtimeMs, now);
    }
    entry.mtimeMs = info.mtimeMs;
    if (entry.container || !this.isDormant(entry, now)) this.live.set(path, entry);
    else this.live.delete(path);
    return entry;
  }

  private async readDirectory(path: string, entry: DirEntry): Promise<void> {
    let listing: Dirent[];
    try {
      listing = await readdir(path, { withFileTypes: true });
    } catch (err) {
      this.logger.debug({ dir: path, err }, 'cannot list directory under a --watch root');
      listing = [];
    }
    const subdirs: string[] = [];
    const sockets: string[] = [];
    let jobDir = false;
    for (const dirent of listing) {
      // Symlinked directories are not followed: they could loop, and pyATS only symlinks the socket itself.
      if (dirent.isDirectory()) subdirs.push(dirent.name);
      else if (dirent.name === this.socketName && (dirent.isSocket() || dirent.isSymbolicLink())) {
        sockets.push(dirent.name);
        jobDir = true;
      } else if (JOB_DIR_MARKERS.has(dirent.name)) jobDir = true;
    }
    const kept = new Set(subdirs);
    for (const old of entry.subdirs) if (!kept.has(old)) this.forget(childPath(path, old));
    entry.subdirs = subdirs;
    entry.sockets = sockets;
    entry.jobDir = jobDir;
    entry.container =
      CONTAINER_NAMES.has(basename(path)) ||
      subdirs.some((name) => this.dirs.get(childPath(path, name))?.jobDir === true);
    if (jobDir) this.markParentContainer(path);
  }

  private markParentContainer(path: string): void {
    const parent = dirname(path);
    const entry = this.dirs.get(parent);
    if (entry === undefined) return;
    entry.container = true;
    this.live.set(parent, entry);
  }

  private isDormant(entry: DirEntry, now: number): boolean {
    return now - entry.mtimeMs > this.dormantAfterMs;
  }

  /**
   * Roots and runinfo containers are watched always; other directories while young and before they become a job
   * directory (a running job writes its logs there, and fs.watch would fire on every write).
   */
  private updateWatch(path: string, entry: DirEntry, mtimeMs: number, now: number): void {
    if (!this.useWatch) return;
    const young = now - mtimeMs <= this.dormantAfterMs;
    const wanted = entry.depth === 0 || entry.container || (young && !entry.jobDir);
    if (!wanted) {
      this.unwatch(entry);
      return;
    }
    if (entry.watcher !== undefined || this.watcherCount >= this.maxWatchers) return;
    try {
      const watcher = watch(path, { persistent: false }, (eventType) => {
        // 'change' is a write to a file inside; only created or removed entries matter.
        if (eventType === 'rename') this.requestScan(WATCH_DEBOUNCE_MS);
      });
      watcher.on('error', () => this.unwatch(entry));
      entry.watcher = watcher;
      this.watcherCount++;
    } catch (err) {
      this.warnOnce(`watch:${(err as NodeJS.ErrnoException).code ?? 'error'}`, () =>
        this.logger.warn({ dir: path, err }, 'cannot watch directory; relying on polling'),
      );
    }
  }

  private unwatch(entry: DirEntry): void {
    if (entry.watcher === undefined) return;
    entry.watcher.close();
    entry.watcher = undefined;
    this.watcherCount--;
  }

  /** Drops a directory and everything below it from the cache. */
  private forget(path: string): void {
    const entry = this.dirs.get(path);
    if (entry === undefined) return;
    this.unwatch(entry);
    this.dirs.delete(path);
    this.live.delete(path);
    for (const name of entry.subdirs) this.forget(childPath(path, name));
  }

  private async checkSocket(path: string): Promise<void> {
    let identity: string | undefined;
    try {
      // stat follows the symlink pyATS makes when the runinfo path is too long for a Unix socket.
      const info = await stat(path);
      // Birth time too: a new socket at the same path may reuse the inode number of the one it replaces.
      if (info.isSocket()) identity = `${info.dev}:${info.ino}:${info.birthtimeMs}`;
    } catch {
      identity = undefined;
    }
    if (this.stopped) return;
    const now = this.now();
    const tracked = this.tracked.get(path);
    if (tracked !== undefined) {
      if (tracked.detaching) return;
      if (identity === undefined || identity !== tracked.identity) {
        tracked.removedAt ??= now;
        const replaced = identity !== undefined;
        if (replaced || !tracked.connected || now - tracked.removedAt >= this.detachGraceMs) {
          void this.detach(tracked, replaced ? 'replaced' : 'removed');
        }
      } else if (!tracked.connected && now - tracked.lastActivityAt >= this.staleAfterMs) {
        this.stale.set(path, identity);
        void this.detach(tracked, 'stale');
      }
      return;
    }
    const staleIdentity = this.stale.get(path);
    if (staleIdentity !== undefined) {
      if (staleIdentity === identity) return;
      this.stale.delete(path);
    }
    if (identity !== undefined) this.attach(path, identity, now);
  }

  private attach(path: string, identity: string, now: number): void {
    const tracked: TrackedSocket = {
      path,
      identity,
      subscriber: NOT_CREATED,
      connected: false,
      lastActivityAt: now,
    };
    const activity: SocketActivity = {
      connected: () => {
        tracked.connected = true;
        tracked.lastActivityAt = this.now();
      },
      disconnected: () => {
        tracked.connected = false;
        tracked.lastActivityAt = this.now();
        // The job removed its socket and its last connection is now closed: nothing more will come.
        if (tracked.removedAt !== undefined) void this.detach(tracked, 'removed');
      },
    };
    try {
      tracked.subscriber = this.options.createSubscriber(path, activity);
    } catch (err) {
      this.logger.error({ socket: path, err }, 'cannot create a subscriber for a discovered socket');
      this.stale.set(path, identity);
      return;
    }
    this.tracked.set(path, tracked);
    this.options.health?.setReporterWatched(path);
    this.logger.info({ socket: path }, 'discovered pyATS reporter socket');
    tracked.subscriber.start();
  }

  private detach(tracked: TrackedSocket, reason: DetachReason): Promise<void> {
    tracked.detaching ??= (async () => {
      try {
        await tracked.subscriber.stop();
      } catch (err) {
        this.logger.warn({ socket: tracked.path, err }, 'subscriber failed to stop');
      }
      if (this.tracked.get(tracked.path) === tracked) this.tracked.delete(tracked.path);
      this.options.health?.setReporterUnwatched(tracked.path);
      this.logger.info({ socket: tracked.path, reason }, 'detached from pyATS reporter socket');
    })();
    return tracked.detaching;
  }

  private warnTooManyDirectories(skipped: string): void {
    this.warnOnce('max_directories', () =>
      this.logger.warn(
        { maxDirectories: this.maxDirectories, skipped },
        'too many directories under --watch roots; not searching further ones',
      ),
    );
  }

  private warnMissingRoot(path: string, err: NodeJS.ErrnoException): void {
    this.warnOnce(`root:${path}`, () =>
      this.logger.warn({ dir: path, code: err.code }, '--watch directory not found yet; polling for it'),
    );
  }

  private warnOnce(key: string, warn: () => void): void {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    warn();
  }
}

async function forEachLimited<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++] as T;
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

// Paths are kept resolved, so plain concatenation is enough (path.join would dominate a scan of a large tree).
function childPath(dir: string, name: string): string {
  return dir.endsWith(sep) ? dir + name : dir + sep + name;
}

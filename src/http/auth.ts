// Credentials for the HTTP server: bcrypt-hashed basic auth users (exporter-toolkit's `basic_auth_users`) and
// bearer tokens, checked by an Express middleware that answers 401 and nothing else.
import { createHash, timingSafeEqual } from 'node:crypto';
import bcrypt from 'bcryptjs';
import type express from 'express';
import { ConfigError } from '../errors.js';
import type { Logger } from '../log.js';

/** Paths Kubernetes probes call; they usually cannot send credentials. */
export const PROBE_PATHS: readonly string[] = ['/healthz', '/readyz'];

const BCRYPT_HASH = /^\$2[aby]?\$\d\d\$[./A-Za-z0-9]{53}$/;

/** True for a bcrypt hash as htpasswd -B, Python's bcrypt or Go's x/crypto/bcrypt write it ($2a$/$2b$/$2y$). */
export function isBcryptHash(value: string): boolean {
  return BCRYPT_HASH.test(value);
}

export interface AuthOptions {
  /** user → bcrypt hash. Default: none. */
  basicAuthUsers?: Readonly<Record<string, string>>;
  /** Bearer tokens, any of which is accepted. Default: none. */
  bearerTokens?: readonly string[];
  /** Exact request paths served without credentials. Default: none (pass PROBE_PATHS to leave probes open). */
  openPaths?: readonly string[];
  /** Realm named in WWW-Authenticate. Default 'pyats-exporter'. */
  realm?: string;
  /** Distinct verifications allowed to wait for bcrypt before further ones get 429. Default 32. */
  maxPendingVerifications?: number;
  /** Checks a password against a bcrypt hash. Default: bcryptjs's compare. Tests count calls through it. */
  compare?: (password: string, hash: string) => Promise<boolean>;
}

/** `ok`: let through; `missing`/`rejected`: 401; `busy`: too many bcrypt verifications queued, 429. */
export type AuthOutcome = 'ok' | 'missing' | 'rejected' | 'busy';

const SUCCESS_CACHE_SIZE = 64;
const FAILURE_CACHE_SIZE = 256;

/**
 * Decides whether an Authorization header is acceptable. bcrypt is slow on purpose (tens of ms per check in
 * pure JS), and Prometheus sends the same password every few seconds, so outcomes are cached the way
 * exporter-toolkit does it: keyed by a SHA-256 of user, stored hash and presented password (never the
 * password itself). Successes and failures are cached apart so a flood of wrong passwords cannot evict a
 * legitimate scraper's entry; concurrent checks of one credential share one bcrypt run; bcrypt runs one at
 * a time so it cannot monopolise the event loop that serves /metrics.
 */
export class Authenticator {
  private readonly users: ReadonlyMap<string, string>;
  private readonly tokenDigests: readonly Buffer[];
  private readonly openPaths: ReadonlySet<string>;
  private readonly realm: string;
  private readonly maxPending: number;
  private readonly compare: (password: string, hash: string) => Promise<boolean>;
  private readonly successes = new Map<string, true>();
  private readonly failures = new Map<string, true>();
  private readonly inFlight = new Map<string, Promise<boolean>>();
  private bcryptQueue: Promise<unknown> = Promise.resolve();

  constructor(opts: AuthOptions) {
    const users = Object.entries(opts.basicAuthUsers ?? {});
    const tokens = opts.bearerTokens ?? [];
    if (users.length === 0 && tokens.length === 0) {
      throw new ConfigError(
        'bad_web_config',
        'authentication needs at least one basic auth user or bearer token',
      );
    }
    for (const [user, hash] of users) {
      if (!isBcryptHash(hash)) {
        throw new ConfigError('bad_web_config', `basic auth user "${user}": password is not a bcrypt hash`);
      }
    }
    if (tokens.some((token) => token === '')) throw new ConfigError('bad_web_config', 'empty bearer token');
    this.users = new Map(users);
    this.tokenDigests = tokens.map(sha256);
    this.openPaths = new Set(opts.openPaths ?? []);
    this.realm = opts.realm ?? 'pyats-exporter';
    this.maxPending = opts.maxPendingVerifications ?? 32;
    this.compare = opts.compare ?? ((password, hash) => bcrypt.compare(password, hash));
  }

  /** Whether `path` (Express's req.path) is served without credentials. */
  isOpen(path: string): boolean {
    return this.openPaths.has(path);
  }

  /** The WWW-Authenticate challenges for a 401, one per accepted scheme. */
  challenges(): string[] {
    const challenges: string[] = [];
    if (this.users.size > 0) challenges.push(`Basic realm="${this.realm}", charset="UTF-8"`);
    if (this.tokenDigests.length > 0) challenges.push(`Bearer realm="${this.realm}"`);
    return challenges;
  }

  async verify(authorization: string | undefined): Promise<AuthOutcome> {
    if (authorization === undefined || authorization.trim() === '') return 'missing';
    const match = /^\s*(\S+)\s+(.*)$/s.exec(authorization);
    if (!match) return 'rejected';
    const scheme = (match[1] ?? '').toLowerCase();
    const credentials = (match[2] ?? '').trim();
    if (scheme === 'bearer' && this.tokenDigests.length > 0) return this.verifyToken(credentials);
    if (scheme === 'basic' && this.users.size > 0) return this.verifyBasic(credentials);
    return 'rejected';
  }

  private verifyToken(token: string): AuthOutcome {
    const presented = sha256(token);
    // Compare against every token, without stopping early, so timing says nothing about which one matched.
    let ok = false;
    for (const digest of this.tokenDigests) ok = timingSafeEqual(presented, digest) || ok;
    return ok ? 'ok' : 'rejected';
  }

  private async verifyBasic(encoded: string): Promise<AuthOutcome> {
    const decoded = Buffer.from(encoded, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return 'rejected';
    const user = decoded.slice(0, colon);
    const password = decoded.slice(colon + 1);
    const stored = this.users.get(user);
    // An unknown user still costs one bcrypt (against a real user's hash, so of the same cost), so response
    // time does not reveal which user names exist. The result is ignored for unknown users.
    const hash = stored ?? (this.users.values().next().value as string);
    const key = createHash('sha256')
      .update([user, hash, password].map((part) => Buffer.from(part).toString('hex')).join(':'))
      .digest('hex');
    if (this.successes.has(key)) {
      touch(this.successes, key);
      return stored === undefined ? 'rejected' : 'ok';
    }
    if (this.failures.has(key)) {
      touch(this.failures, key);
      return 'rejected';
    }
    let pending = this.inFlight.get(key);
    if (!pending) {
      if (this.inFlight.size >= this.maxPending) return 'busy';
      pending = this.runBcrypt(password, hash);
      this.inFlight.set(key, pending);
      void pending.finally(() => this.inFlight.delete(key));
    }
    const matches = await pending;
    const ok = matches && stored !== undefined;
    remember(ok ? this.successes : this.failures, key, ok ? SUCCESS_CACHE_SIZE : FAILURE_CACHE_SIZE);
    return ok ? 'ok' : 'rejected';
  }

  private runBcrypt(password: string, hash: string): Promise<boolean> {
    const run = this.bcryptQueue.then(() => this.compare(password, hash).catch(() => false));
    this.bcryptQueue = run;
    return run;
  }
}

function sha256(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

/** Marks `key` most recently used (a Map iterates in insertion order, so the first key is the oldest). */
function touch(cache: Map<string, true>, key: string): void {
  cache.delete(key);
  cache.set(key, true);
}

function remember(cache: Map<string, true>, key: string, size: number): void {
  touch(cache, key);
  while (cache.size > size) {
    const oldest = cache.keys().next().value;
    if (oldest === undefined) break;
    cache.delete(oldest);
  }
}

/**
 * Lets a request through when its path is open or its credentials are good. Otherwise 401 with the
 * challenges and a one-word body (no other route runs, so nothing of /metrics leaks), or 429 when bcrypt is
 * backed up.
 */
export function requireAuth(auth: Authenticator, logger: Logger): express.RequestHandler {
  return (req, res, next) => {
    if (auth.isOpen(req.path)) {
      next();
      return;
    }
    auth.verify(req.get('authorization')).then(
      (outcome) => {
        if (outcome === 'ok') {
          next();
          return;
        }
        res.setHeader('Cache-Control', 'no-store');
        if (outcome === 'busy') {
          logger.warn(
            { remote: req.socket.remoteAddress, path: req.path },
            'too many pending authentications',
          );
          res.status(429).set('Retry-After', '1').type('text/plain').send('Too Many Requests\n');
          return;
        }
        if (outcome === 'rejected') {
          logger.warn({ remote: req.socket.remoteAddress, path: req.path }, 'bad HTTP credentials');
        }
        res.status(401).set('WWW-Authenticate', auth.challenges()).type('text/plain').send('Unauthorized\n');
      },
      (err: unknown) => next(err),
    );
  };
}

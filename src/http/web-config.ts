// The `--web.config.file` of Prometheus exporters (exporter-toolkit's format: TLS, bcrypt basic auth, security
// headers) plus a pyats-exporter extension for bearer tokens; parsed and loaded once at start-up.
import { X509Certificate } from 'node:crypto';
import { createSecureContext, type SecureVersion, type TLSSocket } from 'node:tls';
import { readFileSync } from 'node:fs';
import type https from 'node:https';
import { dirname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError } from '../errors.js';
import { PROBE_PATHS, isBcryptHash, type AuthOptions } from './auth.js';

/** Go's tls.ClientAuthType names, as exporter-toolkit spells them. */
export const CLIENT_AUTH_TYPES = [
  'NoClientCert',
  'RequestClientCert',
  'RequireAnyClientCert',
  'VerifyClientCertIfGiven',
  'RequireAndVerifyClientCert',
] as const;
export type ClientAuthType = (typeof CLIENT_AUTH_TYPES)[number];

const TLS_VERSIONS: Record<string, SecureVersion> = {
  TLS10: 'TLSv1',
  TLS11: 'TLSv1.1',
  TLS12: 'TLSv1.2',
  TLS13: 'TLSv1.3',
};
const TLS_VERSION_NAMES = ['TLS10', 'TLS11', 'TLS12', 'TLS13'] as const;

/** The headers exporter-toolkit lets `http_server_config.headers` set. */
const SETTABLE_HEADERS = [
  'Content-Security-Policy',
  'X-Frame-Options',
  'X-Content-Type-Options',
  'X-XSS-Protection',
  'Strict-Transport-Security',
];

/** exporter-toolkit options this exporter does not implement: refused by name rather than silently ignored. */
const UNSUPPORTED: Record<string, string> = {
  'tls_server_config.cert': 'give the certificate as cert_file',
  'tls_server_config.key': 'give the key as key_file',
  'tls_server_config.cipher_suites': "Node.js's default cipher suites are used",
  'tls_server_config.curve_preferences': "Node.js's default curves are used",
  'tls_server_config.client_allowed_sans': 'restrict clients through the CA in client_ca_file',
};

const fileSchema = z.strictObject({
  tls_server_config: z
    .strictObject({
      cert_file: z.string().min(1),
      key_file: z.string().min(1),
      client_auth_type: z.enum(CLIENT_AUTH_TYPES).default('NoClientCert'),
      client_ca_file: z.string().min(1).optional(),
      min_version: z.enum(TLS_VERSION_NAMES).default('TLS12'),
      max_version: z.enum(TLS_VERSION_NAMES).optional(),
      prefer_server_cipher_suites: z.boolean().default(true),
    })
    .optional(),
  http_server_config: z
    .strictObject({
      // HTTP/2 is not served; the flag is accepted so an existing exporter web config can be reused as is.
      http2: z.boolean().optional(),
      headers: z.record(z.string(), z.string()).optional(),
    })
    .optional(),
  basic_auth_users: z.record(z.string(), z.string()).nullish(),
  pyats_exporter: z
    .strictObject({
      bearer_token_file: z.string().min(1).optional(),
      probes_require_auth: z.boolean().default(false),
    })
    .optional(),
});

/** A web config file as written, relative paths already resolved against the file's directory. */
export interface WebConfigFile {
  file: string;
  tls?: {
    certFile: string;
    keyFile: string;
    clientAuth: ClientAuthType;
    clientCaFile?: string;
    minVersion: SecureVersion;
    maxVersion?: SecureVersion;
    honorCipherOrder: boolean;
  };
  basicAuthUsers: Record<string, string>;
  bearerTokenFile?: string;
  probesRequireAuth: boolean;
  responseHeaders: Record<string, string>;
}

export interface TlsSettings {
  cert: Buffer;
  key: Buffer;
  /** CA bundle client certificates are verified against. */
  clientCa?: Buffer;
  clientAuth: ClientAuthType;
  minVersion: SecureVersion;
  maxVersion?: SecureVersion;
  honorCipherOrder: boolean;
}

/** Everything the HTTP server needs from a web config file, with certificates and tokens read. */
export interface WebConfig {
  file: string;
  /** Serve HTTPS. Absent: plain HTTP. */
  tls?: TlsSettings;
  /** Require credentials. Absent: no authentication. */
  auth?: AuthOptions;
  /** Extra headers on every response (`http_server_config.headers`). */
  responseHeaders: Record<string, string>;
}

function fail(file: string, message: string): never {
  throw new ConfigError('bad_web_config', `web config ${file}: ${message}`);
}

/** Parses and validates the YAML text of `file` (used for messages and to resolve relative paths). No I/O. */
export function parseWebConfig(text: string, file: string): WebConfigFile {
  let data: unknown;
  try {
    data = parseYaml(text);
  } catch (error) {
    fail(file, `not valid YAML: ${(error as Error).message}`);
  }
  if (data === null || data === undefined) data = {};
  refuseUnsupported(data, file);
  const checked = fileSchema.safeParse(data);
  if (!checked.success) {
    const issue = checked.error.issues[0];
    const where = issue?.path.map(String).join('.') ?? '';
    if (issue?.code === 'unrecognized_keys') {
      const keys = issue.keys.map((key) => (where === '' ? key : `${where}.${key}`));
      fail(file, `unknown key${keys.length > 1 ? 's' : ''} ${keys.map((k) => `"${k}"`).join(', ')}`);
    }
    fail(file, `${where === '' ? 'top level' : where}: ${issue?.message ?? 'invalid'}`);
  }
  const parsed = checked.data;
  const base = dirname(resolve(file));
  const inDir = (path: string): string => resolve(base, path);

  const result: WebConfigFile = {
    file,
    basicAuthUsers: {},
    probesRequireAuth: parsed.pyats_exporter?.probes_require_auth ?? false,
    responseHeaders: {},
  };

  const tls = parsed.tls_server_config;
  if (tls) {
    const verifies =
      tls.client_auth_type === 'VerifyClientCertIfGiven' ||
      tls.client_auth_type === 'RequireAndVerifyClientCert';
    if (verifies && tls.client_ca_file === undefined) {
      fail(file, `tls_server_config.client_auth_type ${tls.client_auth_type} needs client_ca_file`);
    }
    if (tls.client_ca_file !== undefined && tls.client_auth_type === 'NoClientCert') {
      fail(file, 'tls_server_config.client_ca_file is set but client_auth_type is NoClientCert');
    }
    if (tls.max_version !== undefined && tls.max_version < tls.min_version) {
      fail(file, `tls_server_config.max_version ${tls.max_version} is below min_version ${tls.min_version}`);
    }
    result.tls = {
      certFile: inDir(tls.cert_file),
      keyFile: inDir(tls.key_file),
      clientAuth: tls.client_auth_type,
      minVersion: TLS_VERSIONS[tls.min_version] as SecureVersion,
      honorCipherOrder: tls.prefer_server_cipher_suites,
    };
    if (tls.client_ca_file !== undefined) result.tls.clientCaFile = inDir(tls.client_ca_file);
    if (tls.max_version !== undefined) result.tls.maxVersion = TLS_VERSIONS[tls.max_version] as SecureVersion;
  }

  for (const [user, hash] of Object.entries(parsed.basic_auth_users ?? {})) {
    if (!isBcryptHash(hash)) {
      fail(
        file,
        `basic_auth_users.${user}: not a bcrypt hash (make one with htpasswd -nBC 10 "" | tr -d ':\\n')`,
      );
    }
    result.basicAuthUsers[user] = hash;
  }

  const tokenFile = parsed.pyats_exporter?.bearer_token_file;
  if (tokenFile !== undefined) result.bearerTokenFile = inDir(tokenFile);

  for (const [name, value] of Object.entries(parsed.http_server_config?.headers ?? {})) {
    const canonical = SETTABLE_HEADERS.find((allowed) => allowed.toLowerCase() === name.toLowerCase());
    if (canonical === undefined) {
      fail(
        file,
        `http_server_config.headers: "${name}" cannot be set (allowed: ${SETTABLE_HEADERS.join(', ')})`,
      );
    }
    if (!/^[\t\x20-\x7e]*$/.test(value))
      fail(file, `http_server_config.headers.${name}: invalid header value`);
    result.responseHeaders[canonical] = value;
  }
  return result;
}

function refuseUnsupported(data: unknown, file: string): void {
  for (const [key, hint] of Object.entries(UNSUPPORTED)) {
    const [section = '', option = ''] = key.split('.');
    const value = (data as Record<string, unknown> | undefined)?.[section];
    if (typeof value === 'object' && value !== null && option in value) {
      fail(file, `${key} is an exporter-toolkit option pyats-exporter does not support (${hint})`);
    }
  }
}

/** Reads `file`, validates it, and reads the certificates, key and token file it names. */
export function loadWebConfig(file: string): WebConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    fail(file, `cannot read: ${(error as Error).message}`);
  }
  const parsed = parseWebConfig(text, file);
  const config: WebConfig = { file, responseHeaders: parsed.responseHeaders };

  if (parsed.tls) {
    const { tls } = parsed;
    const cert = readMaterial(file, 'tls_server_config.cert_file', tls.certFile);
    const key = readMaterial(file, 'tls_server_config.key_file', tls.keyFile);
    try {
      new X509Certificate(cert);
    } catch (error) {
      fail(
        file,
        `tls_server_config.cert_file ${tls.certFile}: not a PEM certificate: ${(error as Error).message}`,
      );
    }
    try {
      createSecureContext({ cert, key });
    } catch (error) {
      fail(file, `tls_server_config: cannot use cert_file/key_file: ${(error as Error).message}`);
    }
    config.tls = {
      cert,
      key,
      clientAuth: tls.clientAuth,
      minVersion: tls.minVersion,
      honorCipherOrder: tls.honorCipherOrder,
    };
    if (tls.maxVersion !== undefined) config.tls.maxVersion = tls.maxVersion;
    if (tls.clientCaFile !== undefined) {
      const ca = readMaterial(file, 'tls_server_config.client_ca_file', tls.clientCaFile);
      try {
        new X509Certificate(ca);
      } catch (error) {
        fail(
          file,
          `tls_server_config.client_ca_file ${tls.clientCaFile}: not a PEM certificate: ${(error as Error).message}`,
        );
      }
      config.tls.clientCa = ca;
    }
  }

  let bearerTokens: string[] = [];
  if (parsed.bearerTokenFile !== undefined) {
    const text = readMaterial(file, 'pyats_exporter.bearer_token_file', parsed.bearerTokenFile).toString(
      'utf8',
    );
    bearerTokens = text
      .split(/\r?\n/)
      .map((line) => line.trim())
      .filter((line) => line !== '');
    if (bearerTokens.length === 0)
      fail(file, `pyats_exporter.bearer_token_file ${parsed.bearerTokenFile} is empty`);
  }

  if (Object.keys(parsed.basicAuthUsers).length > 0 || bearerTokens.length > 0) {
    config.auth = {
      basicAuthUsers: parsed.basicAuthUsers,
      bearerTokens,
      openPaths: parsed.probesRequireAuth ? [] : PROBE_PATHS,
    };
  }
  return config;
}

function readMaterial(file: string, key: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    fail(file, `${key}: cannot read ${path}: ${(error as Error).message}`);
  }
}

/** node:https options for `tls`. Client certificate rules Node cannot express are in clientCertificateProblem. */
export function httpsServerOptions(tls: TlsSettings): https.ServerOptions {
  const options: https.ServerOptions = {
    cert: tls.cert,
    key: tls.key,
    minVersion: tls.minVersion,
    honorCipherOrder: tls.honorCipherOrder,
    requestCert: tls.clientAuth !== 'NoClientCert',
    // Only this mode fails the handshake itself; the others accept any certificate here and are checked after.
    rejectUnauthorized: tls.clientAuth === 'RequireAndVerifyClientCert',
  };
  if (tls.maxVersion !== undefined) options.maxVersion = tls.maxVersion;
  if (tls.clientCa !== undefined) options.ca = tls.clientCa;
  return options;
}

/**
 * Why a finished handshake must be dropped under `tls.clientAuth`, or undefined when it is acceptable:
 * RequireAnyClientCert needs some certificate, VerifyClientCertIfGiven needs a presented one to verify.
 */
export function clientCertificateProblem(tls: TlsSettings, socket: TLSSocket): string | undefined {
  const presented = socket.getPeerX509Certificate() !== undefined;
  if (tls.clientAuth === 'RequireAnyClientCert' && !presented) return 'no client certificate';
  if (tls.clientAuth === 'VerifyClientCertIfGiven' && presented && !socket.authorized) {
    return `client certificate not verified: ${String(socket.authorizationError)}`;
  }
  return undefined;
}

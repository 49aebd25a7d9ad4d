// --web.config.file end to end: the built binary protects /metrics, leaves probes open, and refuses a bad
// file at start-up with exit 2.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli, runExporter } from '../helpers/exporter-process.js';

const dir = mkdtempSync(join(tmpdir(), 'pyats-web-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('--web.config.file', () => {
  it('requires credentials on /metrics and keeps the probes open', async () => {
    writeFileSync(join(dir, 'token'), 'scrape-token\n');
    const file = join(dir, 'web.yml');
    writeFileSync(
      file,
      `basic_auth_users:\n  prometheus: ${bcrypt.hashSync('secret', 4)}\npyats_exporter:\n  bearer_token_file: token\n`,
    );
    const exporter = await runExporter([
      '--reporter-socket',
      join(dir, 'none.sock'),
      '--listen',
      '127.0.0.1:0',
      '--web.config.file',
      file,
    ]);
    try {
      const anonymous = await fetch(`${exporter.url}/metrics`);
      expect(anonymous.status).toBe(401);
      expect(await anonymous.text()).not.toMatch(/pyats_/);
      const basic = await fetch(`${exporter.url}/metrics`, {
        headers: { authorization: `Basic ${Buffer.from('prometheus:secret').toString('base64')}` },
      });
      expect(basic.status).toBe(200);
      expect(await basic.text()).toMatch(/pyats_exporter_build_info/);
      const wrong = await fetch(`${exporter.url}/metrics`, { headers: { authorization: 'Bearer nope' } });
      expect(wrong.status).toBe(401);
      const bearer = await fetch(`${exporter.url}/metrics`, {
        headers: { authorization: 'Bearer scrape-token' },
      });
      expect(bearer.status).toBe(200);
      expect((await fetch(`${exporter.url}/healthz`)).status).toBe(200);
      expect(exporter.logs.some((l) => /without TLS/.test(l.msg))).toBe(true);
    } finally {
      expect((await exporter.stop()).code).toBe(0);
    }
  });

  it('refuses a bad file at start-up with exit 2 naming it', async () => {
    const file = join(dir, 'bad.yml');
    writeFileSync(file, 'basic_auth_users:\n  prometheus: plaintext\n');
    const result = await runCli(['--reporter-socket', join(dir, 'x.sock'), '--web.config.file', file]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/--web\.config\.file: .*bad\.yml/);
    const missing = await runCli(['--reporter-socket', join(dir, 'x.sock')], {
      PYATS_EXPORTER_WEB_CONFIG_FILE: join(dir, 'missing.yml'),
    });
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/PYATS_EXPORTER_WEB_CONFIG_FILE/);
  });
});

// The Docker image without a Docker engine: the Dockerfile's shape (multi-stage, non-root, HEALTHCHECK, OCI
// labels, the package's bin as ENTRYPOINT), the .dockerignore allowlist, and `scripts/docker-build.sh check`,
// which replays the build stage's COPY and RUN lines in a temp dir; the runtime tree it makes must start and
// pass the Dockerfile's own HEALTHCHECK command.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/exporter-process.js';
import { ROOT } from './shipped.js';
import { freePort, runTool } from './tools.js';

interface Instruction {
  keyword: string;
  args: string;
}

/** Dockerfile instructions, continuation lines joined, comments and the parser directive dropped. */
function instructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    if (pending === '' && (raw.trim() === '' || raw.trimStart().startsWith('#'))) continue;
    const line = raw.trimEnd();
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1).trim()} `;
      continue;
    }
    const full = (pending + line.trim()).trim();
    pending = '';
    const space = full.indexOf(' ');
    out.push({ keyword: full.slice(0, space).toUpperCase(), args: full.slice(space + 1).trim() });
  }
  return out;
}

const DOCKERFILE = instructions(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
const PACKAGE = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  version: string;
  license: string;
  bin: Record<string, string>;
};

function stages(): { build: Instruction[]; final: Instruction[]; preamble: Instruction[] } {
  const froms = DOCKERFILE.flatMap((ins, i) => (ins.keyword === 'FROM' ? [i] : []));
  expect(froms, 'two stages: build and runtime').toHaveLength(2);
  const [first = 0, second = 0] = froms;
  return {
    preamble: DOCKERFILE.slice(0, first),
    build: DOCKERFILE.slice(first, second),
    final: DOCKERFILE.slice(second),
  };
}

function argDefault(name: string, where: Instruction[]): string | undefined {
  const arg = where.find((i) => i.keyword === 'ARG' && i.args.startsWith(`${name}=`));
  return arg?.args.slice(name.length + 1);
}

/** The exec-form (JSON array) command of an instruction such as `HEALTHCHECK ... CMD [...]`. */
function execForm(args: string): string[] {
  const start = args.indexOf('[');
  return JSON.parse(args.slice(start)) as string[];
}

const tmp = mkdtempSync(join(tmpdir(), 'pyats-docker-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('Dockerfile', () => {
  it('builds with dev dependencies in a build stage and ships a non-root runtime stage of an explicit base', () => {
    const { preamble, build, final } = stages();
    const base = argDefault('NODE_IMAGE', preamble);
    expect(base).toMatch(/^node:20[\w.-]*$/);
    expect(base).not.toMatch(/:latest$/);
    expect(build[0]?.args).toBe('${NODE_IMAGE} AS build');
    expect(final[0]?.args).toBe('${NODE_IMAGE}');
    // Every build step goes through the script CI runs.
    const runs = build.filter((i) => i.keyword === 'RUN').map((i) => i.args);
    expect(runs.length).toBeGreaterThan(0);
    for (const run of runs) expect(run).toMatch(/^scripts\/docker-build\.sh [a-z]+( \/\S+)?$/);
    expect(final.filter((i) => i.keyword === 'RUN')).toEqual([]);
    expect(final.filter((i) => i.keyword === 'COPY').map((i) => i.args)).toEqual(['--from=build /app /app']);
    const users = final.filter((i) => i.keyword === 'USER').map((i) => i.args);
    expect(users).toEqual(['node']);
  });

  it('runs the package bin with the default port exposed, OCI labels and the package version', async () => {
    const { final } = stages();
    const entrypoint = final.find((i) => i.keyword === 'ENTRYPOINT');
    expect(execForm(entrypoint?.args ?? '')).toEqual(['node', `/app/${PACKAGE.bin['pyats-exporter']}`]);
    const help = await runCli(['--help']);
    const port = /default 0\.0\.0\.0:(\d+)/.exec(help.stdout)?.[1];
    expect(port).toBeDefined();
    expect(final.filter((i) => i.keyword === 'EXPOSE').map((i) => i.args)).toEqual([port]);
    expect(final.find((i) => i.keyword === 'ENV')?.args).toContain(`PYATS_EXPORTER_LISTEN=0.0.0.0:${port}`);
    expect(argDefault('VERSION', final), 'ARG VERSION follows package.json').toBe(PACKAGE.version);
    const labels = final
      .filter((i) => i.keyword === 'LABEL')
      .map((i) => i.args)
      .join(' ');
    for (const key of ['title', 'description', 'version', 'licenses']) {
      expect(labels).toContain(`org.opencontainers.image.${key}=`);
    }
    expect(labels).toContain(`org.opencontainers.image.licenses="${PACKAGE.license}"`);
  });

  it('has a HEALTHCHECK that asks /healthz with node itself (no curl in the image)', () => {
    const { final } = stages();
    const check = final.find((i) => i.keyword === 'HEALTHCHECK');
    expect(check).toBeDefined();
    const cmd = execForm(check?.args ?? '');
    expect(cmd[0]).toBe('node');
    expect(cmd.join(' ')).toContain('/healthz');
  });

  it('.dockerignore lets through exactly what the build stage copies', () => {
    const lines = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    expect(lines[0]).toBe('*');
    const allowed = lines.slice(1).map((l) => {
      expect(l.startsWith('!'), `${l} is an exception`).toBe(true);
      return l.slice(1);
    });
    const copied = stages()
      .build.filter((i) => i.keyword === 'COPY')
      .flatMap((i) => i.args.split(/\s+/).slice(0, -1));
    expect([...allowed].sort()).toEqual([...new Set(copied)].sort());
  });
});

describe('scripts/docker-build.sh check (the Dockerfile build stage, replayed)', () => {
  it('builds a runtime tree that starts and passes the HEALTHCHECK command', async () => {
    const app = join(tmp, 'app');
    const build = await runTool('bash', [join(ROOT, 'scripts', 'docker-build.sh'), 'check', app], {
      cwd: ROOT,
    });
    expect(build.code, build.output).toBe(0);
    expect(build.output).toContain(`pyats-exporter ${PACKAGE.version}`);

    const healthcheck = execForm(stages().final.find((i) => i.keyword === 'HEALTHCHECK')?.args ?? '');
    const port = await freePort();
    const env = {
      PATH: process.env['PATH'],
      PYATS_EXPORTER_LISTEN: `127.0.0.1:${port}`,
      OTEL_TRACES_EXPORTER: 'none',
    };
    const probe = (): Promise<number | null> =>
      new Promise((resolve) => {
        const child = spawn(
          healthcheck[0] === 'node' ? process.execPath : String(healthcheck[0]),
          healthcheck.slice(1),
          {
            env,
            stdio: 'ignore',
          },
        );
        child.on('exit', (code) => resolve(code));
      });

    expect(await probe(), 'unhealthy while nothing listens').toBe(1);
    // `demo`: the exporter needs something to watch, and the demo needs no lab.
    const exporter = spawn(process.execPath, [join(app, 'dist', 'cli.js'), 'demo'], {
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    exporter.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<void>((resolve) => exporter.once('exit', () => resolve()));
    try {
      const deadline = Date.now() + 20_000;
      let code = await probe();
      while (code !== 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 200));
        code = await probe();
      }
      expect(code, `healthy once the exporter from the runtime tree listens; its log:\n${stderr}`).toBe(0);
    } finally {
      exporter.kill('SIGTERM');
      await exited;
    }
  }, 300_000);
});

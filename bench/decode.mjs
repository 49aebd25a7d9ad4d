#!/usr/bin/env node
// Micro-benchmark of the decode path alone, from memory (no socket): FrameReader + unpickle over a generated
// stream file, in 64 KiB chunks as a socket delivers them. For profiling the unpickler with `node --cpu-prof`.
// Usage: node bench/decode.mjs [STREAM_FILE] [--passes N] [--dist DIR] [--normalize]
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values: opts, positionals } = parseArgs({
  options: {
    passes: { type: 'string', default: '5' },
    dist: { type: 'string' },
    normalize: { type: 'boolean', default: false },
  },
  allowPositionals: true,
});
if (opts.dist) process.env.BENCH_DIST = opts.dist;
const { distModule } = await import('./lib/dist.mjs');
const { FrameReader } = await distModule('reporter/framing.js');
const { unpickle } = await distModule('python/unpickle.js');
const { normalize } = await distModule('events/normalize.js');
const { resolveZone } = await distModule('events/timezone.js');

const out = fileURLToPath(new URL('./out/', import.meta.url));
const file =
  positionals[0] ??
  join(
    out,
    readdirSync(out)
      .filter((f) => /^stream-20000tc-.*\.bin$/.test(f))
      .sort()[0] ?? '',
  );
const data = readFileSync(file);
const CHUNK = 64 * 1024;
const normalizeOptions = { zone: resolveZone('UTC'), maxStringLength: 4096 };

for (let pass = 1; pass <= Number(opts.passes); pass++) {
  const reader = new FrameReader({ format: 'auto', maxFrameBytes: 64 * 1024 * 1024 });
  let events = 0;
  let rejected = 0;
  const start = process.hrtime.bigint();
  const cpuStart = process.cpuUsage();
  for (let at = 0; at < data.length; at += CHUNK) {
    for (const frame of reader.push(data.subarray(at, Math.min(at + CHUNK, data.length)))) {
      const value = unpickle(frame);
      if (opts.normalize && !normalize(value, normalizeOptions).ok) rejected++;
      events++;
    }
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const cpu = process.cpuUsage(cpuStart);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  process.stdout.write(
    `pass ${pass}: ${events} events, wall ${seconds.toFixed(3)} s, CPU ${cpuSeconds.toFixed(3)} s = ` +
      `${Math.round(events / cpuSeconds).toLocaleString('en-US')} events per CPU-second ` +
      `(${((cpuSeconds * 1e9) / events).toFixed(0)} ns/event)${opts.normalize ? `, ${rejected} rejected` : ''}\n`,
  );
}

// Summarizes a V8 .cpuprofile (from `node --cpu-prof`): self time by function and by area of the code
// (our modules by folder, each npm package, Node internals, GC). Also runnable: node bench/lib/profile.mjs FILE.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Where a function lives, coarse enough to show which part of the pipeline the time goes to. */
function areaOf(url, functionName) {
  if (functionName === '(garbage collector)') return 'gc';
  if (functionName === '(idle)') return 'idle';
  if (functionName === '(program)') return 'program (V8/native)';
  if (url === '') return 'native';
  const ours = /\/dist\/(.+?)\/[^/]+\.js$/.exec(url) ?? /\/dist\/([^/]+)\.js$/.exec(url);
  if (ours && !url.includes('/node_modules/')) return `src/${ours[1]}`;
  const pkg = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (pkg) return pkg[1];
  if (url.startsWith('node:')) return 'node internals';
  return url;
}

/** Self time per function and per area, in ms, sorted by time. Idle time is left out of the percentages. */
export function summarizeProfile(path) {
  const profile = JSON.parse(readFileSync(path, 'utf8'));
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const selfUs = new Map();
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i];
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const functions = new Map();
  const areas = new Map();
  let busyUs = 0;
  for (const [id, us] of selfUs) {
    const { callFrame } = byId.get(id);
    const name = callFrame.functionName || '(anonymous)';
    const area = areaOf(callFrame.url, name);
    if (area === 'idle') continue;
    busyUs += us;
    const file = callFrame.url.replace(/^.*\/(node_modules|dist)\//, '$1/').replace(/^file:\/\//, '');
    const key = `${name} ${file}:${callFrame.lineNumber + 1}`;
    functions.set(key, (functions.get(key) ?? 0) + us);
    areas.set(area, (areas.get(area) ?? 0) + us);
  }
  const sorted = (map) =>
    [...map.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([name, us]) => ({ name, ms: us / 1000, percent: (100 * us) / busyUs }));
  return { busyMs: busyUs / 1000, functions: sorted(functions), areas: sorted(areas) };
}

export function formatProfile(summary, top = 25) {
  const lines = [
    `busy (non-idle) CPU time in profile: ${summary.busyMs.toFixed(0)} ms`,
    'by area (self time):',
  ];
  for (const a of summary.areas.slice(0, 14)) {
    lines.push(`  ${a.percent.toFixed(1).padStart(5)}%  ${a.ms.toFixed(0).padStart(6)} ms  ${a.name}`);
  }
  lines.push(`top ${top} functions (self time):`);
  for (const f of summary.functions.slice(0, top)) {
    lines.push(`  ${f.percent.toFixed(1).padStart(5)}%  ${f.ms.toFixed(0).padStart(6)} ms  ${f.name}`);
  }
  return lines.join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [path, top] = process.argv.slice(2);
  if (!path) {
    process.stderr.write('usage: profile.mjs FILE.cpuprofile [TOP]\n');
    process.exit(2);
  }
  process.stdout.write(`${formatProfile(summarizeProfile(path), Number(top ?? 25))}\n`);
}

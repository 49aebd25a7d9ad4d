// Property tests: whatever the bytes, unpickle returns a value within its bounds or throws an UnpickleError,
// and never anything else. Seeds are random bytes, opcode soup and mutated real CPython pickles.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PyObject, type PyValue } from '../../src/python/pyvalues.js';
import { unpickle, UnpickleError } from '../../src/python/unpickle.js';

const GENERATOR = fileURLToPath(new URL('../fixtures/gen_pickles.py', import.meta.url));
const RUNS = 2000;
const MAX_DEPTH = 20;
const OBJECT_PROTOTYPE_KEYS = Reflect.ownKeys(Object.prototype);

let dir: string;
const fixtures: Uint8Array[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'unpickle-fuzz-'));
  await promisify(execFile)('python3', [GENERATOR, dir]);
  for (const file of (await readdir(dir)).sort()) {
    // The big ones make each run slow without reaching more code.
    if (file.endsWith('.pickle') && !/^(deep_ok|batches)\./.test(file)) {
      fixtures.push(new Uint8Array(await readFile(join(dir, file))));
    }
  }
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Nesting depth of a decoded value, walking each container once; fails the test past `maxDepth`. */
function depthOf(root: PyValue, maxDepth: number): number {
  const seen = new Map<object, number>();
  const visit = (value: PyValue, level: number): number => {
    if (typeof value !== 'object' || value === null || value instanceof Uint8Array) return 0;
    const children = Array.isArray(value)
      ? value
      : value instanceof PyObject
        ? [...value.args, value.state ?? null, ...value.listItems, ...Object.values(value.dictItems)]
        : Object.getPrototypeOf(value) === null
          ? Object.values(value)
          : undefined;
    if (children === undefined) return 0;
    const known = seen.get(value);
    if (known !== undefined) return known;
    expect(level).toBeLessThan(maxDepth);
    seen.set(value, Infinity);
    const depth = 1 + Math.max(0, ...children.map((child) => visit(child, level + 1)));
    seen.set(value, depth);
    return depth;
  };
  return visit(root, 0);
}

function decodesOrRejects(data: Uint8Array, maxDepth = MAX_DEPTH): void {
  let value: PyValue;
  try {
    value = unpickle(data, { maxDepth, maxItems: 100_000 });
  } catch (err) {
    if (err instanceof UnpickleError) return;
    throw err;
  }
  expect(depthOf(value, maxDepth)).toBeLessThanOrEqual(maxDepth);
}

/** Byte sequences that are mostly valid opcodes with small arguments, so the VM gets past the first byte. */
const opcodeSoup = fc
  .array(
    fc.oneof(
      fc.constantFrom(
        ...'()].}NLtlduaesb0120\x85\x86\x87\x88\x89\x8f\x90\x91\x93\x94\x81\x92R'
          .split('')
          .map((c) => [c.charCodeAt(0)]),
      ),
      fc.tuple(fc.constantFrom(0x4b, 0x68, 0x71, 0x43, 0x8c, 0x8a, 0x55), fc.integer({ min: 0, max: 6 })),
      fc.tuple(fc.constantFrom(0x4b, 0x8c), fc.integer({ min: 0, max: 255 })),
      fc.constantFrom(
        [0x8c, 8, ...Buffer.from('datetime')],
        [0x8c, 8, ...Buffer.from('timezone')],
        [0x8c, 9, ...Buffer.from('timedelta')],
        [0x63, ...Buffer.from('copyreg\n_reconstructor\n')],
        [0x63, ...Buffer.from('builtins\ngetattr\n')],
        [0x63, ...Buffer.from('_codecs\nencode\n')],
        [0x43, 10, 7, 232, 1, 2, 3, 4, 5, 0, 0, 7],
        [0x8c, 6, ...Buffer.from('latin1')],
        [0x4a, 0xff, 0xff, 0xff, 0xff],
      ),
    ),
    { maxLength: 60 },
  )
  .map((chunks) => Uint8Array.from([0x80, 4, ...chunks.flat(), 0x2e]));

/**
 * A stream that always decodes: each choice picks an opcode that is valid for the simulated stack (lists,
 * dicts, scalars), using MEMOIZE / BINGET freely, so lists get appended to after they were nested.
 */
function memoStream(choices: number[]): Uint8Array {
  const out = [0x80, 4];
  const stack: ('list' | 'dict' | 'tuple' | 'int')[] = [];
  const memo: (typeof stack)[number][] = [];
  for (const choice of choices) {
    const top = stack[stack.length - 1];
    const below = stack[stack.length - 2];
    switch (choice % 9) {
      case 0:
        out.push(0x5d);
        stack.push('list');
        break;
      case 1:
        out.push(0x7d);
        stack.push('dict');
        break;
      case 2:
        out.push(0x4b, choice % 7);
        stack.push('int');
        break;
      case 3:
        if (top === undefined || memo.length > 255) break;
        out.push(0x94);
        memo.push(top);
        break;
      case 4:
        if (memo.length === 0) break;
        out.push(0x68, choice % memo.length);
        stack.push(memo[choice % memo.length]!);
        break;
      case 5:
        if (top === undefined || below !== 'list') break;
        out.push(0x61);
        stack.pop();
        break;
      case 6:
        if (top === undefined || below !== 'int' || stack[stack.length - 3] !== 'dict') break;
        out.push(0x73);
        stack.length -= 2;
        break;
      case 7:
        if (top === undefined) break;
        out.push(choice % 2 === 0 ? 0x32 : 0x85);
        stack.push(choice % 2 === 0 ? top : 'tuple');
        if (choice % 2 !== 0) stack.splice(-2, 1);
        break;
      case 8:
        if (top === undefined || below === undefined) break;
        out.push(0x86);
        stack.length -= 2;
        stack.push('tuple');
        break;
    }
  }
  if (stack.length === 0) out.push(0x4e);
  out.push(0x2e);
  return Uint8Array.from(out);
}

describe('unpickle under fuzzing', () => {
  it('random bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (data) => decodesOrRejects(data)),
      { numRuns: RUNS },
    );
  });

  it('random bytes after a protocol header', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 5 }), fc.uint8Array({ maxLength: 300 }), (protocol, body) =>
        decodesOrRejects(Uint8Array.from([0x80, protocol, ...body])),
      ),
      { numRuns: RUNS },
    );
  });

  it('opcode soup', () => {
    fc.assert(
      fc.property(opcodeSoup, (data) => decodesOrRejects(data)),
      { numRuns: RUNS },
    );
  });

  it('memo-heavy streams never beat a small depth bound', () => {
    // Containers fetched back from the memo and grown after being nested (or nested in themselves): what the
    // incremental depth check hands over to a full walk.
    fc.assert(
      fc.property(
        fc.array(fc.nat(), { maxLength: 120 }),
        fc.integer({ min: 1, max: 4 }),
        (choices, maxDepth) => decodesOrRejects(memoStream(choices), maxDepth),
      ),
      { numRuns: RUNS },
    );
  });

  it('mutated real CPython pickles', () => {
    expect(fixtures.length).toBeGreaterThan(50);
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant('set' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
      fc.record({
        kind: fc.constant('delete' as const),
        at: fc.nat(),
        length: fc.integer({ min: 1, max: 8 }),
      }),
      fc.record({
        kind: fc.constant('insert' as const),
        at: fc.nat(),
        bytes: fc.uint8Array({ maxLength: 8 }),
      }),
      fc.record({
        kind: fc.constant('copy' as const),
        at: fc.nat(),
        from: fc.nat(),
        length: fc.nat({ max: 40 }),
      }),
    );
    fc.assert(
      fc.property(fc.nat(), fc.array(mutation, { minLength: 1, maxLength: 4 }), (pick, mutations) => {
        let data = Array.from(fixtures[pick % fixtures.length]!);
        for (const m of mutations) {
          const at = m.at % (data.length + 1);
          if (m.kind === 'set') data[at % data.length] = m.byte;
          else if (m.kind === 'delete') data.splice(at, m.length);
          else if (m.kind === 'insert') data.splice(at, 0, ...m.bytes);
          else
            data = [
              ...data.slice(0, at),
              ...data.slice(m.from % data.length).slice(0, m.length),
              ...data.slice(at),
            ];
        }
        decodesOrRejects(Uint8Array.from(data));
      }),
      { numRuns: RUNS },
    );
  });

  it('leaves Object.prototype untouched', () => {
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Reflect.ownKeys(Object.prototype)).toEqual(OBJECT_PROTOTYPE_KEYS);
    expect(Object.getPrototypeOf({})).toBe(Object.prototype);
  });
});

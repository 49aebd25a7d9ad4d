// The self-rendering metric families, each checked against a real prom-client metric fed the same values:
// `get()` shape, both exposition formats byte for byte, label escaping, exemplars, remove and reset.
import { Counter, Gauge, Histogram, Registry, type RegistryContentType } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { renderMetrics } from '../../src/http/server.js';
import {
  escapeLabelValue,
  formatSampleValue,
  HistogramFamily,
  isSelfRendering,
  ScalarFamily,
} from '../../src/telemetry/series.js';

const TRICKY = [
  'plain',
  'back\\slash',
  'quo"te',
  'new\nline',
  'all\\"\n3',
  '',
  'ünï€ode',
  'astral 😀',
  'lone \ud800',
];

/** What prom-client's Registry writes for just this metric, in the given format. */
async function promClientText(
  make: (registers: Registry<RegistryContentType>[]) => unknown,
  openMetrics: boolean,
): Promise<string> {
  const registry = new Registry<RegistryContentType>();
  if (openMetrics) registry.setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
  make([registry]);
  return registry.metrics();
}

/** The family's text framed as a one-metric registry frames it. */
function framed(text: string, openMetrics: boolean): string {
  return openMetrics ? `${text}\n# EOF\n` : `${text}\n`;
}

describe('escapeLabelValue and formatSampleValue', () => {
  it('escapes backslash, double quote and line feed, and nothing else', () => {
    expect(escapeLabelValue('a\\b"c\nd')).toBe('a\\\\b\\"c\\nd');
    expect(escapeLabelValue('tab\there {}=,')).toBe('tab\there {}=,');
  });

  it('writes values as prom-client does', () => {
    expect(
      [1, 0, -0, 2.5, 1e21, 1e-7, 1 / 3, Infinity, -Infinity, Number.NaN].map(formatSampleValue),
    ).toEqual(['1', '0', '0', '2.5', '1e+21', '1e-7', `${1 / 3}`, '+Inf', '-Inf', 'Nan']);
  });
});

describe('ScalarFamily', () => {
  const labelNames = ['job', 'testcase'];

  for (const openMetrics of [false, true]) {
    const format = openMetrics ? 'OpenMetrics' : 'Prometheus text';

    it(`writes a counter as prom-client does, escaping label values (${format})`, async () => {
      const family = new ScalarFamily({
        name: 'x_things_total',
        help: 'Things.',
        labelNames,
        type: 'counter',
      });
      const expected = await promClientText((registers) => {
        const counter = new Counter({ name: 'x_things_total', help: 'Things.', labelNames, registers });
        TRICKY.forEach((value, i) => counter.inc({ job: 'j', testcase: value }, i + 1));
      }, openMetrics);
      TRICKY.forEach((value, i) => (family.child(['j', value]).value += i + 1));
      expect(framed(family.renderExposition(openMetrics), openMetrics)).toBe(expected);
    });

    it(`writes a gauge, its odd values included, as prom-client does (${format})`, async () => {
      const values = [0, -3.25, 1e21, 1 / 3, Infinity, -Infinity, Number.NaN, 1_700_000_000.123];
      const family = new ScalarFamily({
        name: 'x_level',
        help: 'A "level"\\ \n2.',
        labelNames,
        type: 'gauge',
      });
      const expected = await promClientText((registers) => {
        const gauge = new Gauge({ name: 'x_level', help: 'A "level"\\ \n2.', labelNames, registers });
        values.forEach((v, i) => gauge.set({ job: 'j', testcase: `t${i}` }, v));
      }, openMetrics);
      values.forEach((v, i) => (family.child(['j', `t${i}`]).value = v));
      expect(framed(family.renderExposition(openMetrics), openMetrics)).toBe(expected);
    });

    it(`writes a family without labels or series as prom-client does (${format})`, async () => {
      const empty = new ScalarFamily({ name: 'x_none_total', help: 'None.', labelNames, type: 'counter' });
      expect(framed(empty.renderExposition(openMetrics), openMetrics)).toBe(
        await promClientText(
          (registers) => new Counter({ name: 'x_none_total', help: 'None.', labelNames, registers }),
          openMetrics,
        ),
      );
      const bare = new ScalarFamily({ name: 'x_bare', help: 'Bare.', labelNames: [], type: 'gauge' });
      bare.child([]).value = 4;
      expect(framed(bare.renderExposition(openMetrics), openMetrics)).toBe(
        await promClientText(
          (registers) => new Gauge({ name: 'x_bare', help: 'Bare.', registers }).set(4),
          openMetrics,
        ),
      );
    });
  }

  it('gives get() in the shape of the prom-client counter fed the same values', async () => {
    const registry = new Registry();
    const counter = new Counter({ name: 'x_ref_total', help: 'Ref.', labelNames, registers: [registry] });
    const family = new ScalarFamily({ name: 'x_things_total', help: 'Ref.', labelNames, type: 'counter' });
    family.register(registry);
    for (const [job, testcase, n] of [
      ['a', 'tc1', 1],
      ['a', 'tc2', 2],
      ['b', 'tc1', 1],
      ['a', 'tc1', 3],
    ] as const) {
      counter.inc({ job, testcase }, n);
      family.child([job, testcase]).value += n;
    }
    const [ref, ours] = await registry.getMetricsAsJSON();
    expect(ours).toEqual({ ...ref, name: 'x_things_total' });
    expect(ours?.values).toEqual([
      { value: 4, labels: { job: 'a', testcase: 'tc1' } },
      { value: 2, labels: { job: 'a', testcase: 'tc2' } },
      { value: 1, labels: { job: 'b', testcase: 'tc1' } },
    ]);
  });

  it('hands out one series per label values, drops it on remove and zeroes it on reset', async () => {
    const registry = new Registry();
    const family = new ScalarFamily({ name: 'x_g', help: 'G.', labelNames: ['k'], type: 'gauge' });
    family.register(registry);
    const a = family.child(['a']);
    expect(family.child(['a'])).toBe(a);
    a.value = 2;
    family.child(['b']).value = 3;
    family.remove(['a']);
    a.value = 9;
    expect(family.size).toBe(1);
    expect(family.renderExposition(false)).toBe('# HELP x_g G.\n# TYPE x_g gauge\nx_g{k="b"} 3');
    // Created again after removal: a new series at zero, at the end.
    family.child(['a']).value += 1;
    expect(family.renderExposition(false)).toBe(
      '# HELP x_g G.\n# TYPE x_g gauge\nx_g{k="b"} 3\nx_g{k="a"} 1',
    );

    registry.resetMetrics();
    expect((await registry.getMetricsAsJSON())[0]?.values).toEqual([
      { value: 0, labels: { k: 'b' } },
      { value: 0, labels: { k: 'a' } },
    ]);
    expect(() => family.child(['a', 'extra'])).toThrow(/2 label values for 1 labels/);
  });

  it('refuses invalid metric and label names', () => {
    expect(() => new ScalarFamily({ name: 'bad-name', help: 'h', labelNames: [], type: 'gauge' })).toThrow();
    expect(
      () => new ScalarFamily({ name: 'ok', help: 'h', labelNames: ['bad label'], type: 'gauge' }),
    ).toThrow();
    expect(
      () => new ScalarFamily({ name: 'ok', help: 'h', labelNames: ['__reserved'], type: 'gauge' }),
    ).toThrow();
  });
});

describe('HistogramFamily', () => {
  const buckets = [0.01, 0.25, 1, 10, 3600];
  const labelNames = ['job', 'type'];
  /** Bounds exactly, between them, zero, and past the last bound. */
  const observations: [string, number][] = [
    ['Step', 0.01],
    ['Step', 0.0100001],
    ['Step', 0],
    ['Step', 0.2],
    ['Te"st\\Sec\ntion', 1],
    ['Te"st\\Sec\ntion', 10],
    ['Te"st\\Sec\ntion', 7200],
    ['Step', 3600],
    ['Step', 3600.5],
    ['ünï€ode 😀', 2],
    ['lone \udc00', 3],
  ];

  for (const openMetrics of [false, true]) {
    const format = openMetrics ? 'OpenMetrics' : 'Prometheus text';

    it(`writes cumulative buckets, sum and count as prom-client does (${format})`, async () => {
      const family = new HistogramFamily({ name: 'x_seconds', help: 'Time.', labelNames, buckets });
      const expected = await promClientText((registers) => {
        const h = new Histogram({ name: 'x_seconds', help: 'Time.', labelNames, buckets, registers });
        for (const [type, v] of observations) h.observe({ job: 'j', type }, v);
      }, openMetrics);
      for (const [type, v] of observations) family.child(['j', type]).observe(v);
      expect(framed(family.renderExposition(openMetrics), openMetrics)).toBe(expected);
    });

    it(`writes a histogram without labels as prom-client does (${format})`, async () => {
      const family = new HistogramFamily({ name: 'x_bare_seconds', help: 'T.', labelNames: [], buckets });
      const expected = await promClientText((registers) => {
        const h = new Histogram({ name: 'x_bare_seconds', help: 'T.', buckets, registers });
        h.observe(0.5);
        h.observe(20);
      }, openMetrics);
      family.child([]).observe(0.5);
      family.child([]).observe(20);
      expect(framed(family.renderExposition(openMetrics), openMetrics)).toBe(expected);
    });
  }

  describe('with exemplars', () => {
    beforeEach(() => {
      vi.useFakeTimers({ toFake: ['Date'] });
      vi.setSystemTime(1_700_000_123_456);
    });
    afterEach(() => {
      vi.useRealTimers();
    });

    const traced: [string, number, string][] = [
      ['Step', 0.2, 'a1'],
      ['Step', 0.21, 'a2'],
      ['Step', 5000, 'a3'],
      ['Test', 1, 'b1'],
    ];

    it('writes the latest exemplar of each bucket in OpenMetrics only, as prom-client does', async () => {
      for (const openMetrics of [false, true]) {
        const family = new HistogramFamily({
          name: 'x_seconds',
          help: 'Time.',
          labelNames,
          buckets,
          exemplars: true,
        });
        // prom-client refuses exemplars on a Prometheus-text registry, so its reference is always OpenMetrics;
        // without exemplar lines the two formats differ only in the `# EOF` framing.
        const reference = await promClientText((registers) => {
          const h = new Histogram({
            name: 'x_seconds',
            help: 'Time.',
            labelNames,
            buckets,
            enableExemplars: true,
            registers,
          });
          for (const [type, value, span] of traced) {
            h.observe({
              labels: { job: 'j', type },
              value,
              exemplarLabels: { trace_id: 'f'.repeat(32), span_id: span },
            });
          }
        }, true);
        for (const [type, value, span] of traced) {
          family.child(['j', type]).observe(value, { trace_id: 'f'.repeat(32), span_id: span });
        }
        const text = family.renderExposition(openMetrics);
        if (openMetrics) {
          expect(framed(text, true)).toBe(reference);
          expect(text).toContain(
            `x_seconds_bucket{le="0.25",job="j",type="Step"} 2 # {trace_id="${'f'.repeat(32)}",span_id="a2"} 0.21 1700000123.456`,
          );
          expect(text).toContain('x_seconds_bucket{le="+Inf",job="j",type="Step"} 3 # {');
        } else {
          expect(text).not.toContain('trace_id');
          expect(framed(text, false)).toBe(
            reference.replace(/ # \{[^}]*\} \S+ \S+/g, '').replace(/\n# EOF\n$/, '\n'),
          );
        }
      }
    });

    it('gives get() in the shape of the prom-client histogram fed the same values', async () => {
      const registry = new Registry<RegistryContentType>();
      registry.setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
      new Histogram({
        name: 'x_ref_seconds',
        help: 'Time.',
        labelNames,
        buckets,
        enableExemplars: true,
        registers: [registry],
      });
      const family = new HistogramFamily({
        name: 'x_seconds',
        help: 'Time.',
        labelNames,
        buckets,
        exemplars: true,
      });
      family.register(registry);
      const ref = registry.getSingleMetric('x_ref_seconds') as Histogram;
      for (const [type, value, span] of traced) {
        const exemplarLabels = { trace_id: 'f'.repeat(32), span_id: span };
        ref.observe({ labels: { job: 'j', type }, value, exemplarLabels });
        family.child(['j', type]).observe(value, exemplarLabels);
      }
      const [theirs, ours] = await registry.getMetricsAsJSON();
      const rename = (v: unknown): unknown =>
        JSON.parse(JSON.stringify(v).replaceAll('x_ref_seconds', 'x_seconds')) as unknown;
      // JSON drops prom-client's `exemplar: undefined` on _sum/_count and its Exemplar class, like ours.
      expect(rename(ours)).toEqual(rename(theirs));
      expect(ours?.values).toHaveLength(2 * (buckets.length + 3));
    });
  });

  it('gives get() without exemplars in the shape of prom-client, `le` first and numeric', async () => {
    const registry = new Registry();
    const ref = new Histogram({
      name: 'x_ref_seconds',
      help: 'T.',
      labelNames,
      buckets,
      registers: [registry],
    });
    const family = new HistogramFamily({ name: 'x_seconds', help: 'T.', labelNames, buckets }).register(
      registry,
    );
    for (const [type, v] of observations) {
      ref.observe({ job: 'j', type }, v);
      family.child(['j', type]).observe(v);
    }
    const [theirs, ours] = await registry.getMetricsAsJSON();
    const renamed = {
      ...theirs,
      name: 'x_seconds',
      values: theirs?.values.map((v) => ({
        ...v,
        metricName: (v as { metricName?: string }).metricName?.replace('x_ref_seconds', 'x_seconds'),
      })),
    };
    expect(ours).toEqual(renamed);
    expect(Object.keys(ours?.values[0]?.labels ?? {})).toEqual(['le', 'job', 'type']);
  });

  it('drops series on remove and zeroes counts, sum and exemplars on reset', async () => {
    const registry = new Registry();
    const family = new HistogramFamily({
      name: 'x_seconds',
      help: 'T.',
      labelNames: ['k'],
      buckets: [1],
      exemplars: true,
    }).register(registry);
    family.child(['a']).observe(0.5, { trace_id: 't' });
    family.child(['b']).observe(2);
    family.remove(['a']);
    expect(family.renderExposition(true)).toBe(
      [
        '# HELP x_seconds T.',
        '# TYPE x_seconds histogram',
        'x_seconds_bucket{le="1",k="b"} 0',
        'x_seconds_bucket{le="+Inf",k="b"} 1',
        'x_seconds_sum{k="b"} 2',
        'x_seconds_count{k="b"} 1',
      ].join('\n'),
    );
    family.child(['b']).observe(0.5, { trace_id: 't' });
    registry.resetMetrics();
    expect(family.renderExposition(true)).not.toContain('# {');
    expect((await registry.getMetricsAsJSON())[0]?.values.map((v) => v.value)).toEqual([0, 0, 0, 0]);
  });

  it('refuses an `le` label', () => {
    expect(() => new HistogramFamily({ name: 'x', help: 'h', labelNames: ['le'], buckets: [1] })).toThrow(
      /le/,
    );
  });
});

/** Switches the registry's own content type, as code calling `registry.metrics()` for OpenMetrics would. */
function openMetricsMode(registry: Registry): void {
  (registry as unknown as Registry<RegistryContentType>).setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
}

describe('families in a prom-client Registry', () => {
  /** Families and prom-client metrics interleaved, as the daemon's registry has them. */
  function mixedRegistry(): Registry {
    const registry = new Registry();
    new Counter({ name: 'a_first_total', help: 'First.', labelNames: ['k'], registers: [registry] }).inc(
      { k: 'v' },
      2,
    );
    const counter = new ScalarFamily({
      name: 'b_things_total',
      help: 'B.',
      labelNames: ['k'],
      type: 'counter',
    });
    counter.register(registry).child(['x"y']).value += 3;
    new Gauge({ name: 'c_middle', help: 'Middle.', registers: [registry] }).set(1);
    const histogram = new HistogramFamily({
      name: 'd_seconds',
      help: 'D.',
      labelNames: ['k'],
      buckets: [1, 2],
      exemplars: true,
    }).register(registry);
    histogram.child(['v']).observe(1.5, { trace_id: 'abc' });
    new Counter({ name: 'e_last_total', help: 'Last.', registers: [registry] });
    return registry;
  }

  it('are told apart from prom-client metrics', () => {
    const kinds = mixedRegistry()
      .getMetricsAsArray()
      .map((m) => isSelfRendering(m));
    expect(kinds).toEqual([false, true, false, true, false]);
  });

  it('render in registry order exactly as the registry itself would, in both formats', async () => {
    const registry = mixedRegistry();
    const text = await renderMetrics(registry, 'prometheus');
    expect(text).toBe(await registry.metrics());
    expect(text).not.toContain('trace_id');

    const om = await renderMetrics(registry, 'openmetrics');
    expect(om.match(/# EOF/g)).toHaveLength(1);
    expect(om).toContain('# TYPE b_things counter\nb_things_total{k="x\\"y"} 3\n');
    expect(om).toContain('d_seconds_bucket{le="2",k="v"} 1 # {trace_id="abc"} 1.5 ');
    // prom-client's own OpenMetrics rendering (which renames the counters in place, so it comes last).
    openMetricsMode(registry);
    expect(om).toBe(await registry.metrics());
  });

  it('keep `_total` in later Prometheus-text scrapes after the registry renamed them for OpenMetrics', async () => {
    const registry = mixedRegistry();
    const before = await renderMetrics(registry, 'prometheus');
    openMetricsMode(registry);
    await registry.metrics();
    const after = await renderMetrics(registry, 'prometheus');
    expect(after).toContain('# TYPE b_things_total counter\nb_things_total{k="x\\"y"} 3');
    expect(after.split('\n').filter((l) => l.startsWith('b_') || l.startsWith('d_'))).toEqual(
      before.split('\n').filter((l) => l.startsWith('b_') || l.startsWith('d_')),
    );
  });
});

describe('renderPieces: unchanged blocks are the same objects from scrape to scrape', () => {
  /** The full text of a family, from scratch: a new family fed the same series in the same order. */
  function textOf(pieces: readonly { text: string }[]): string {
    return pieces.map((p) => p.text).join('');
  }

  it('re-renders only the block whose series changed, and its text matches the whole rendering', () => {
    const family = new ScalarFamily({ name: 'x_r_total', help: 'R.', labelNames: ['k'], type: 'counter' });
    const series = Array.from({ length: 1000 }, (_, i) => family.child([`s${i}`]));
    for (const openMetrics of [false, true]) {
      const first = family.renderPieces(openMetrics);
      // A header, then blocks of 256 series.
      expect(first).toHaveLength(1 + Math.ceil(1000 / 256));
      series[300]!.value += 1;
      const second = family.renderPieces(openMetrics);
      expect(second.map((p, i) => p === first[i])).toEqual([true, true, false, true, true]);
      expect(textOf(second)).toBe(family.renderExposition(openMetrics));
      expect(textOf(second)).toContain(`\nx_r_total{k="s300"} ${series[300]!.value}\n`);
    }
  });

  it('keeps the blocks before an added series, lays out again after a removal, and sees reset', () => {
    const family = new ScalarFamily({ name: 'x_l', help: 'L.', labelNames: ['k'], type: 'gauge' });
    for (let i = 0; i < 600; i++) family.child([`s${i}`]).value = i;
    const first = family.renderPieces(false);
    family.child(['new']).value = 1;
    const added = family.renderPieces(false);
    expect(added.slice(0, 3)).toEqual(first.slice(0, 3));
    expect(added[1]).toBe(first[1]);
    expect(added[3]).not.toBe(first[3]);
    expect(textOf(added)).toMatch(/x_l\{k="s599"\} 599\nx_l\{k="new"\} 1$/);

    family.remove(['s0']);
    const removed = family.renderPieces(false);
    expect(removed[1]).not.toBe(added[1]);
    expect(textOf(removed)).not.toContain('k="s0"');
    expect(textOf(removed).match(/\nx_l\{/g)).toHaveLength(600);

    family.reset();
    expect(textOf(family.renderPieces(false))).not.toMatch(/ [1-9]\d*$/m);
  });

  it('keeps a NaN gauge as it is, and notices a value set to the same number as unchanged', () => {
    const family = new ScalarFamily({ name: 'x_n', help: 'N.', labelNames: [], type: 'gauge' });
    family.child([]).value = Number.NaN;
    const first = family.renderPieces(false);
    family.child([]).value = Number.NaN;
    expect(family.renderPieces(false)[1]).toBe(first[1]);
    family.child([]).value = 2;
    expect(family.renderPieces(false)[1]!.text).toBe('\nx_n 2');
  });

  it('re-renders a histogram block after an observation, exemplar included, and not otherwise', () => {
    const family = new HistogramFamily({
      name: 'x_h',
      help: 'H.',
      labelNames: ['k'],
      buckets: [1, 2],
      exemplars: true,
    });
    const series = Array.from({ length: 40 }, (_, i) => family.child([`s${i}`]));
    const first = family.renderPieces(true);
    expect(family.renderPieces(true)).toEqual(first);
    series[20]!.observe(1.5, { trace_id: 'abc' });
    const second = family.renderPieces(true);
    // Blocks of 16 series: the second block holds s16..s31.
    expect(second.map((p, i) => p === first[i])).toEqual([true, true, false, true]);
    expect(second[2]!.text).toContain('x_h_bucket{le="2",k="s20"} 1 # {trace_id="abc"} 1.5 ');
    expect(textOf(second)).toBe(family.renderExposition(true));
    // The Prometheus-text pieces are their own: no exemplar there.
    expect(textOf(family.renderPieces(false))).not.toContain('trace_id');
  });
});

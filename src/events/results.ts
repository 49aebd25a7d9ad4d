// pyATS's result roll-up: the result a parent section takes from its children's results.
import type { ResultValue } from './types.js';

// Lowest first, from pyATS's result roll-up table: Skipped + Passed is Passed, Passed + Passx is Passx, Passx +
// Blocked is Blocked, Blocked + Failed is Failed, Failed + Errored is Errored, anything + Aborted is Aborted.
export const ROLLUP_ORDER: readonly ResultValue[] = [
  'skipped',
  'passed',
  'passx',
  'blocked',
  'failed',
  'errored',
  'aborted',
];

const ROLLUP_RANK = Object.fromEntries(ROLLUP_ORDER.map((value, rank) => [value, rank])) as Readonly<
  Record<ResultValue, number>
>;

/** The roll-up of `worst` (undefined: nothing yet) and one more result; O(1), for folding one at a time. */
export function rollUp(worst: ResultValue | undefined, value: ResultValue): ResultValue {
  return worst === undefined || ROLLUP_RANK[value] > ROLLUP_RANK[worst] ? value : worst;
}

/**
 * A result's verdict as OpenTelemetry's `test.case.result.status` has it: passed and passx pass, failed,
 * errored and aborted fail; skipped and blocked have none.
 */
export function verdictOf(value: ResultValue): 'pass' | 'fail' | undefined {
  switch (value) {
    case 'passed':
    case 'passx':
      return 'pass';
    case 'failed':
    case 'errored':
    case 'aborted':
      return 'fail';
    default:
      return undefined;
  }
}

/** The rolled-up result of `values`, or undefined when there are none. */
export function worstResult(values: readonly ResultValue[]): ResultValue | undefined {
  let worst: ResultValue | undefined;
  for (const value of values) worst = rollUp(worst, value);
  return worst;
}

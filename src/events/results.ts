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

/** The rolled-up result of `values`, or undefined when there are none. */
export function worstResult(values: readonly ResultValue[]): ResultValue | undefined {
  let worst: ResultValue | undefined;
  for (const value of values) {
    if (worst === undefined || ROLLUP_ORDER.indexOf(value) > ROLLUP_ORDER.indexOf(worst)) worst = value;
  }
  return worst;
}

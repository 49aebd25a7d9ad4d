"""`pyats.results` as pyATS 23.2 has it: one TestResult instance per result (Passed, Failed, ...), cloned with a
reason; the classes live in pyats.results.result and pyats.results.counter, where real reporter pickles name
them, so those pickles load here."""

from .counter import ResultCounter
from .result import TestResult

Failed = TestResult(0)
Passed = TestResult(1)
Aborted = TestResult(2)
Blocked = TestResult(3)
Skipped = TestResult(4)
Errored = TestResult(5)
Passx = TestResult(8)

__all__ = ['TestResult', 'ResultCounter', 'Passed', 'Failed', 'Aborted', 'Blocked', 'Skipped', 'Errored', 'Passx']

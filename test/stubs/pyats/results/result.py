"""pyats.results.result.TestResult as pyATS 23.2 pickles it: NEWOBJ(TestResult, (code, reason, data)) and a
__dict__ of code, value, tims, reason, data."""

VALUES = {0: 'failed', 1: 'passed', 2: 'aborted', 3: 'blocked', 4: 'skipped', 5: 'errored', 8: 'passx'}
TIMS = {'failed': 'failed', 'passed': 'passed', 'aborted': 'blocked', 'blocked': 'blocked', 'skipped': 'dropped',
        'errored': 'blocked', 'passx': 'passx'}


class TestResult:
    def __init__(self, code, reason=None, data=None):
        self.code = code
        self.value = VALUES[code]
        self.tims = TIMS[self.value]
        self.reason = reason
        self.data = data

    def __getnewargs__(self):
        return (self.code, self.reason, self.data)

    def clone(self, reason=None, data=None):
        return TestResult(self.code, reason, data)

    def __str__(self):
        return self.value

    def __repr__(self):
        return self.value.capitalize()

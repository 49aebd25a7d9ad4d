"""Result classes named as pyATS names them, so pickles of `pyats.results.<Class>` instances load."""


class TestResult:
    value = None
    code = None
    reason = None

    def __str__(self):
        return str(self.value)


def _result_class(name, value, code):
    return type(name, (TestResult,), {'__module__': __name__, '__qualname__': name, 'value': value, 'code': code})


Failed = _result_class('Failed', 'failed', 0)
Passed = _result_class('Passed', 'passed', 1)
Aborted = _result_class('Aborted', 'aborted', 3)
Blocked = _result_class('Blocked', 'blocked', 4)
Skipped = _result_class('Skipped', 'skipped', 5)
Errored = _result_class('Errored', 'errored', 6)
Passx = _result_class('Passx', 'passx', 7)

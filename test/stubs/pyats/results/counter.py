"""pyats.results.counter.ResultCounter, as a reporter's get_testsuite / get_section replies carry it."""


class ResultCounter(dict):
    def __init__(self, counts=None, weight=1.0):
        super().__init__(counts or {})
        self.weight = weight

    def __reduce__(self):
        return (ResultCounter, (dict(self), self.weight))

"""Stand-in for the parts of pyATS the bridge uses, for tests (PyPI is not reachable here): the documented
`pyats.reporter.ReportClient(path).subscribe(callback)` (speaking pyATS 23.2's protocol), the easypy plugin
base class `pyats.easypy.plugins.bases.BasePlugin`, and `pyats.results` (TestResult, ResultCounter) and
`pyats.reporter.exceptions` so real reporter pickles load.
"""

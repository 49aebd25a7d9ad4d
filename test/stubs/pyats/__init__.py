"""Stand-in for the parts of pyATS the bridge uses, for tests (PyPI is not reachable here): the documented
`pyats.reporter.ReportClient(path).subscribe(callback)`, the easypy plugin base class
`pyats.easypy.plugins.bases.BasePlugin`, and `pyats.results` classes so real reporter pickles load.
"""

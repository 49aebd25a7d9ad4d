"""Easypy job file of the compose example: one task running health_checks.py."""
import os

from pyats.easypy import run


def main(runtime):
    run(
        testscript=os.path.join(os.path.dirname(__file__), 'health_checks.py'),
        runtime=runtime,
        taskid='health_checks',
    )

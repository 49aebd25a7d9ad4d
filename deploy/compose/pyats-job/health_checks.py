"""An example pyATS testscript for the compose stack. It needs no devices, so it runs anywhere; its results
vary from run to run (a flaky BGP check, a rare crash) so the dashboard and the alerts have something to show."""
import random
import time

from pyats import aetest


class CommonSetup(aetest.CommonSetup):
    @aetest.subsection
    def connect(self):
        time.sleep(random.uniform(0.5, 2))


class VerifyReachability(aetest.Testcase):
    @aetest.test
    def ping_neighbors(self, steps):
        for target in ('10.0.0.1', '10.0.0.2', '10.0.0.3'):
            with steps.start('ping %s' % target):
                time.sleep(random.uniform(0.1, 1))


class VerifyBgpNeighbors(aetest.Testcase):
    @aetest.test
    def neighbors_established(self):
        time.sleep(random.uniform(0.5, 3))
        if random.random() < 0.3:
            self.failed('BGP neighbor 10.0.0.2 is in state Idle, expected Established')


class VerifyInterfaceCounters(aetest.Testcase):
    @aetest.test
    def no_crc_errors(self):
        time.sleep(random.uniform(0.2, 1.5))
        if random.random() < 0.1:
            raise RuntimeError('simulated parser crash')


class CommonCleanup(aetest.CommonCleanup):
    @aetest.subsection
    def disconnect(self):
        time.sleep(0.2)

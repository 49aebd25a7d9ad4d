"""BasePlugin as pyATS documents it: constructed by easypy's plugin manager with the runtime and the extra
keys of the plugin's configuration as keyword arguments; stages pre_job(job), pre_task(task),
post_task(task), post_job(job); `enabled` may be set False to leave the stack; errors go to error_handler.
"""

import logging

logger = logging.getLogger(__name__)


class BasePlugin:
    name = None

    def __init__(self, runtime=None, **kwargs):
        self.runtime = runtime
        self.name = self.name or type(self).__name__
        self.enabled = True
        self.kwargs = kwargs

    def error_handler(self, stage, exc):
        logger.error('plugin %s failed in %s: %s', self.name, stage, exc)

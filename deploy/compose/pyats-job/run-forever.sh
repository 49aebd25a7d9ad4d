#!/bin/sh
# Runs the example job forever, each run with its own runinfo directory under /runinfo (the volume shared with
# the exporter, which finds the run's reporter.sock there) and removed afterwards.
#
# umask 0000: pyATS runs as root here and the exporter as the image's unprivileged `node` user, which needs
# write permission on reporter.sock to connect to it. On a real lab server give both the same group instead.
umask 0000
while true; do
  dir=/runinfo/run-$(date +%Y%m%d-%H%M%S)
  pyats run job /jobs/health_job.py --runinfo-dir "$dir" --no-archive --no-mail || true
  rm -rf "$dir"
  sleep "${PYATS_JOB_INTERVAL_SECONDS:-300}"
done

#!/bin/sh
# Longer runs of the boundedness test: `scripts/bounded.sh 1000` restarts a camera 1,000
# times by control command and checks RSS, threads and fds at the end against the start.
set -eu
cd "$(dirname "$0")/.."
CLEFD_TEST_RESTARTS="${1:-1000}" exec cargo test --release --locked --test bounded \
    camera_restarts_leave_rss_threads_and_fds_where_they_were -- --nocapture

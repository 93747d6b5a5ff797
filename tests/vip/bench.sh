#!/usr/bin/env bash
# VIP failover benchmark (root); see firstboot/tests/vip/bench.sh.
exec "$(dirname "$0")/../../firstboot/tests/vip/bench.sh" "$@"

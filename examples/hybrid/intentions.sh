#!/usr/bin/env bash
# Who may call whom in the demo: the dashboard may call counting, and the
# VM's frontend may call the dashboard. Everything else is denied by default.
set -euo pipefail
weft intention create --allow dashboard counting
weft intention create --allow frontend dashboard

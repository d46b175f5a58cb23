#!/bin/sh
# One command for the side-by-side benchmark (see docs/performance.md):
#   tests/bench/compare.sh [--modes stroke,libreswan,xfrm,vici] [--sizes 1,100,1000,10000]
# Builds our release binary, then runs compare.py, which prints a markdown table.
# Needs root (network namespaces), openvswitch-ipsec, python3-openvswitch, libnss3-tools.
set -e
cd "$(dirname "$0")/../.."
cargo build --release --bin ovs-monitor-ipsec
exec /usr/bin/python3 tests/bench/compare.py "$@"

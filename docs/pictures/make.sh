#!/bin/sh
# SPDX-License-Identifier: MIT
# Copyright (c) 2026 The smax authors
#
# Regenerates temperature.svg and/or stability.svg in this directory: compiles the data
# program against ../../include and Eigen, runs it, and plots its table with gnuplot.
#   docs/pictures/make.sh                 # both
#   docs/pictures/make.sh temperature     # one of them
# Environment: CXX (default g++), EIGEN_INCLUDE (default /usr/include/eigen3),
# BUILD (scratch directory for binaries and tables, default build/docs/pictures).
# performance.svg comes from performance.py instead (see README.md).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cxx=${CXX:-g++}
eigen=${EIGEN_INCLUDE:-/usr/include/eigen3}
build=${BUILD:-$repo/build/docs/pictures}
mkdir -p "$build"

[ $# -gt 0 ] || set -- temperature stability
for picture in "$@"; do
  case $picture in
    temperature | stability) ;;
    *) echo "make.sh: unknown picture '$picture' (temperature or stability)" >&2; exit 2 ;;
  esac
  "$cxx" -std=c++17 -O2 -Wall -Wextra -I"$repo/include" -I"$eigen" \
    "$here/${picture}_data.cpp" -o "$build/${picture}_data"
  "$build/${picture}_data" > "$build/$picture.dat"
  (cd "$here" && gnuplot -e "data='$build/$picture.dat'; out='$here/$picture.svg'" "$picture.gp")
  echo "wrote $here/$picture.svg (data in $build/$picture.dat)"
done

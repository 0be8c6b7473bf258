# SPDX-License-Identifier: MIT
# Copyright (c) 2026 The smax authors
# Shared look of the smax pictures: loaded by temperature.gp, stability.gp and the script
# performance.py writes. The caller sets the output file and size afterwards.

set encoding utf8
set border 3 lw 1 lc rgb "#444444"
set tics nomirror out scale 0.6 textcolor rgb "#222222"
set grid back lw 1 lc rgb "#e4e4e4"
set key noautotitle opaque box lc rgb "#cccccc" samplen 2.5 spacing 1.2
set style fill solid 0.85 noborder

# One colour per role, the same in every picture: smax blue, the naive formula red,
# other contenders orange / green / purple / brown, references grey.
c_smax   = "#1f63b4"
c_naive  = "#d62728"
c_orange = "#ff7f0e"
c_green  = "#2ca02c"
c_purple = "#9467bd"
c_brown  = "#8c564b"
c_grey   = "#7f7f7f"
c_light  = "#f6d5d5"

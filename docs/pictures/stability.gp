# SPDX-License-Identifier: MIT
# Copyright (c) 2026 The smax authors
# stability.svg from the table stability_data prints. Usage (see README.md):
#   gnuplot -e "data='stability.dat'; out='stability.svg'" stability.gp

load "style.gp"
# Block 1 of the data: the first c where the naive result is wrong, and where it is NaN.
stats data index 1 using 1 nooutput
c_wrong = STATS_min
stats data index 1 using 2 nooutput
c_nan = STATS_min

set terminal svg size 960,420 enhanced font "sans-serif,13" background rgb "white"
set output out

set title "{/:Bold Stability}: first probability of softmax([2, 1, 0.1] + c) in float, as the shift c grows" font ",15"
set xrange [0:200]
set yrange [-0.05:1.05]
set xtics 20
set ytics 0.2
set xlabel "shift c added to every logit"
set ylabel "probability of class 0"
set key at graph 0.98, graph 0.30 right top Right

# The NaN zone of the naive formula, shaded, with its boundary marked.
set object 1 rect from c_nan, graph 0 to 200, graph 1 back fc rgb c_light fs solid 0.6 noborder
set arrow 1 from c_nan, graph 0 to c_nan, graph 1 nohead dt 2 lw 1.5 lc rgb c_naive back
set label 1 sprintf("c = %g: exp(2 + c) overflows float,\nthe naive result is NaN from here on", c_nan) \
    at c_nan + 3, 0.9 left textcolor rgb c_naive font ",12"
set label 2 sprintf("c = %g: the sum overflows first,\nnaive gives 0 (wrong)", c_wrong) \
    at c_wrong - 3, 0.2 right textcolor rgb c_naive font ",12"
set arrow 2 from c_wrong - 2.5, 0.14 to c_wrong - 0.4, 0.01 lw 1 lc rgb c_naive
set label 3 "smax::softmax: 0.659 for every c" at 120, 0.73 center textcolor rgb c_smax font ",12"

set label 4 "naive: NaN" at (c_nan + 200) / 2, 0.4 center textcolor rgb c_naive font ",20"
plot data index 0 using 1:3 with lines lw 5 lc rgb c_smax title "smax::softmax(z)", \
     ""   index 0 using 1:2 with lines lw 2 dt (6, 4) lc rgb c_naive title "naive: exp(z) / sum(exp(z))", \
     ""   index 0 using 1:($2 == 0 ? 0 : 1/0) with points pt 7 ps 0.8 lc rgb c_naive notitle

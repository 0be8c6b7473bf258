# SPDX-License-Identifier: MIT
# Copyright (c) 2026 The smax authors
# temperature.svg from the table temperature_data prints. Usage (see README.md):
#   gnuplot -e "data='temperature.dat'; out='temperature.svg'" temperature.gp

load "style.gp"
set terminal svg size 960,420 enhanced font "sans-serif,13" background rgb "white"
set output out

set multiplot layout 1,2 title "{/:Bold softmax([2, 1, 0.1], T)}: temperature sharpens (T < 1) or flattens (T > 1)" font ",15"

# Left: each class's probability as a curve of T.
set title "probability of each class vs temperature"
set logscale x
set xrange [0.05:20]
set yrange [0:1]
set xtics ("0.05" 0.05, "0.1" 0.1, "0.2" 0.2, "0.5" 0.5, "1" 1, "2" 2, "5" 5, "10" 10, "20" 20)
set ytics 0.2
set xlabel "temperature T (log scale)"
set ylabel "probability"
set key at graph 0.03, graph 0.62 left top Left reverse title "logit"
set arrow 1 from 1, graph 0 to 1, graph 1 nohead dt 2 lw 1.5 lc rgb c_grey back
set label 1 "T = 1\n(plain softmax)" at 1.1, 0.95 left textcolor rgb "#555555" font ",11"
set label 2 "1/3" at 20, 1.0/3 right offset -0.5, 0.8 textcolor rgb "#555555" font ",11"
plot data index 0 using 1:2 with lines lw 2.5 lc rgb c_smax   title "z = 2", \
     ""   index 0 using 1:3 with lines lw 2.5 lc rgb c_orange title "z = 1", \
     ""   index 0 using 1:4 with lines lw 2.5 lc rgb c_green  title "z = 0.1", \
     1.0/3 with lines dt 3 lw 1 lc rgb c_grey notitle, \
     ""   index 1 every ::1::1 using 1:2 with points pt 7 ps 0.9 lc rgb c_smax   notitle, \
     ""   index 1 every ::1::1 using 1:3 with points pt 7 ps 0.9 lc rgb c_orange notitle, \
     ""   index 1 every ::1::1 using 1:4 with points pt 7 ps 0.9 lc rgb c_green  notitle

# Right: bar charts at four temperatures.
unset arrow 1
unset label 1
unset label 2
unset logscale x
set title "bars at T = 0.5, 1, 2, 10"
set xlabel "temperature T"
set ylabel "probability"
set xrange [-0.6:3.6]
set yrange [0:1]
set style data histogram
set style histogram clustered gap 1
set boxwidth 0.9
set xtics ("0.5" 0, "1" 1, "2" 2, "10" 3) scale 0
set key at graph 0.98, graph 0.98 right top noreverse Right title "logit"
plot data index 1 using 2 lc rgb c_smax   title "z = 2", \
     ""   index 1 using 3 lc rgb c_orange title "z = 1", \
     ""   index 1 using 4 lc rgb c_green  title "z = 0.1", \
     ""   index 1 using ($0 - 0.27):($2 + 0.03):(sprintf("%.2f", $2)) with labels font ",10" notitle, \
     ""   index 1 using ($0):($3 + 0.03):(sprintf("%.2f", $3)) with labels font ",10" notitle, \
     ""   index 1 using ($0 + 0.27):($4 + 0.03):(sprintf("%.2f", $4)) with labels font ",10" notitle

unset multiplot

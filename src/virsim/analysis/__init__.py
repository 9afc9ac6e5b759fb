"""Coverage and trace analysis of firmware runs: the ELF's symbols and DWARF line table
(symbols.py), executed blocks turned into line coverage and lcov/json/drcov (coverage.py), and
recorded execution events turned into symbolised text/json/Chrome traces (trace.py). Backends only
collect raw blocks and events; everything that needs the ELF happens here, in the daemon."""

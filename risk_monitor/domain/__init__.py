"""Pure domain: datasets, risk math, limits, alert lifecycle. No I/O, no framework imports."""

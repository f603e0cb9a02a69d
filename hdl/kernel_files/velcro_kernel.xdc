# Out-of-context clock for packaging/synthesis of the VELCRO kernel: the U280 platform's
# default kernel clock is 300 MHz (v++ --kernel_frequency overrides it at link time).
create_clock -name ap_clk -period 3.333 [get_ports ap_clk]

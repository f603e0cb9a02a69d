# Out-of-context clock for packaging/synthesis of the VELCRO kernel: the U280 platform's
# default kernel clock, @MHZ@ MHz (hdl/config.py KERNEL_CLOCK_MHZ; v++
# --kernel_frequency overrides it at link time).
create_clock -name ap_clk -period @PERIOD_NS@ [get_ports ap_clk]

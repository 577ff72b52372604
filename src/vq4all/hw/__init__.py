"""The hardware side of vq4all: everything that runs or describes the accelerator.

    rtl/            Amaranth ROM + decoder + MAC engine, Verilog and ROM init files
    sim/            cocotb testbenches (Icarus, Verilator) and the Amaranth simulator harness
    synth.py        yosys + nextpnr resource and Fmax measurements
    traffic.py      off-chip weight bytes per inference
    layer_inputs.py real int8 input vectors of zoo layers for simulation

Built on the core (`vq4all.artifact`, `vq4all.reference`); the core never imports this package,
and nothing here imports torch at module import time (cocotb runs inside the simulator).
"""

"""cocotb testbenches and runner for the RTL (imported as `vq4all.hw.sim`); torch-free."""

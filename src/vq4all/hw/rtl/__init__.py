"""Amaranth ROM + decoder + MAC accelerator (imported as `vq4all.hw.rtl`); torch-free.

The ROM word packing it will use is defined once, in `vq4all.reference.rom_words`.
"""

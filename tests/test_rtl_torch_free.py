"""rtl/ and sim/ never import torch (ARCHITECTURE.md): cocotb runs the testbench inside the
simulator's embedded Python, and a hardware flow should not need torch installed."""

import subprocess
import sys


def test_rtl_and_sim_import_without_torch():
    code = (
        "import sys\n"
        "import vq4all.artifact, vq4all.reference\n"
        "import vq4all.hw.rtl.config, vq4all.hw.rtl.rom, vq4all.hw.rtl.mac, vq4all.hw.rtl.actbuf, vq4all.hw.rtl.engine\n"
        "import vq4all.hw.rtl.romfiles, vq4all.hw.rtl.generate\n"
        "import vq4all.hw.sim.streams, vq4all.hw.sim.runner, vq4all.hw.sim.layer, vq4all.hw.sim.amaranth_sim\n"
        "import vq4all.hw.sim.tb_engine\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_config_and_driver_import_without_amaranth():
    """The engine's config and the stream driver (what the cocotb testbench rebuilds from JSON)
    load neither Amaranth nor torch."""
    code = (
        "import sys\n"
        "import vq4all.hw.rtl.config, vq4all.hw.sim.streams\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('amaranth', 'torch'))\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr

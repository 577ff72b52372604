"""rtl/ and sim/ never import torch (ARCHITECTURE.md): cocotb runs the testbench inside the
simulator's embedded Python, and a hardware flow should not need torch installed."""

import subprocess
import sys


def test_rtl_and_sim_import_without_torch():
    code = ("import sys\n"
            "import vq4all.artifact, vq4all.reference\n"
            "import vq4all.rtl.config, vq4all.rtl.rom, vq4all.rtl.mac, vq4all.rtl.actbuf, vq4all.rtl.engine\n"
            "import vq4all.rtl.romfiles, vq4all.rtl.generate\n"
            "import vq4all.sim.streams, vq4all.sim.runner, vq4all.sim.layer, vq4all.sim.amaranth_sim\n"
            "import vq4all.sim.tb_engine\n"
            "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
            "assert not loaded, loaded\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr

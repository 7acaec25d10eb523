"""Install `omnisift_vllm_cpu_shim` into the running Python's site-packages with a `.pth` hook (test environment
only; README, "Serving with vLLM"): `python tests/vllm_plugin/install_cpu_shim.py`."""

import shutil
import sysconfig
from pathlib import Path

site_packages = Path(sysconfig.get_paths()["purelib"])
shutil.copy(Path(__file__).with_name("omnisift_vllm_cpu_shim.py"), site_packages)
(site_packages / "omnisift_vllm_cpu_shim.pth").write_text("import omnisift_vllm_cpu_shim\n")
print(f"installed omnisift_vllm_cpu_shim into {site_packages}")

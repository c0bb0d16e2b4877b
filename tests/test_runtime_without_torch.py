"""The runtime path must work, and never import torch, where torch is not installed."""
import json
import subprocess
import sys

# A finder that refuses torch, as on an install without it (sys.modules['torch'] = None would
# confuse libraries that probe sys.modules for torch).
BLOCK_TORCH = r"""
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == 'torch' or name.startswith('torch.'):
            raise ImportError('No module named ' + repr(name))
sys.meta_path.insert(0, _NoTorch())
"""

SCRIPT = BLOCK_TORCH + r"""
import json
import sslrt
from sslrt.cli import main
r = sslrt.load(sys.argv[1]).localize(sys.argv[2], sys.argv[3])
print(json.dumps({"score": r.score, "torch_loaded": any(m == 'torch' or m.startswith('torch.') for m in sys.modules)}))
"""


def test_runtime_imports_no_torch(tiny_export, media):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, tiny_export.directory, str(media / "scene.jpg"), str(media / "sound.wav")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["torch_loaded"] is False and -1 <= out["score"] <= 1


def test_torch_backend_without_torch_says_what_to_install(tiny_export, media):
    script = (BLOCK_TORCH + "from sslrt.cli import main\n"
              f"main(['run', {str(media / 'scene.jpg')!r}, {str(media / 'sound.wav')!r}, '-m', {tiny_export.directory!r}, '--backend', 'torch'])")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "pip install" in proc.stderr


def test_bench_without_torch_skips_the_reference_row(tiny_export):
    script = (BLOCK_TORCH + "from sslrt.cli import main\n"
              f"main(['bench', '-m', {tiny_export.directory!r}, '--scope', 'engine', '--batch', '1', '--seconds', '0.05'])")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "| onnxruntime | fp32 | 1 |" in proc.stdout and "n/a (no reference row)" in proc.stdout
    assert "Skipped: torch fp32" in proc.stdout

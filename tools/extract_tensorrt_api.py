#!/usr/bin/env python
"""Write the Python API surface of a TensorRT binding wheel to a text file, without TensorRT.

    pip download --no-deps -d wheels tensorrt-cu12-bindings==10.16.1.11 tensorrt-cu13-bindings==11.4.0.106
    python tools/extract_tensorrt_api.py wheels/tensorrt_cu12_bindings-10.16.1.11-*.whl tests/data/tensorrt_api_10.x.txt
    python tools/extract_tensorrt_api.py wheels/tensorrt_cu13_bindings-11.4.0.106-*.whl tests/data/tensorrt_api_11.x.txt

The binding wheels (about 1.3 MB, on PyPI) hold the pybind11 module `tensorrt.so` and the package's
`__init__.py`, but not TensorRT itself (libnvinfer, libnvinfer_plugin and libnvonnxparser come from
NVIDIA's index). The module only calls into those libraries when a builder, runtime or parser is
created, so this script compiles empty stand-ins that carry the right sonames and the handful of
symbols the module links (`nm -D --undefined-only`: factory functions such as
createInferBuilder_INTERNAL, all returning NULL here), loads them first, then imports the real
package (its own `__init__.py`, which adds `nptype`, `__version__`, `Logger.ERROR`, ...) in a
fresh interpreter and lists `dir()` of the module and of every class in it. Nothing of TensorRT is
executed beyond the module's registration of its classes, so the list is exactly the attribute
names that `import tensorrt` exposes with that wheel. Needs a C compiler (cc).

Output: a header naming the wheel file, its version and sha256, then one name a line: module
attributes (`BuilderFlag`), class attributes (`BuilderFlag.TF32`, `IBuilderConfig.set_flag`).
tests/test_tensorrt_api.py checks every TensorRT name sslrt uses against these lists.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile

# The symbols the binding module imports from TensorRT's libraries (10.x and 11.x alike).
_STUB_C = """
void* createInferBuilder_INTERNAL(void){return 0;}
void* createInferRefitter_INTERNAL(void){return 0;}
void* createInferRuntime_INTERNAL(void){return 0;}
void* createNvOnnxParserRefitter_INTERNAL(void){return 0;}
void* createNvOnnxParser_INTERNAL(void){return 0;}
void* getBuilderPluginRegistry(void){return 0;}
int getNvOnnxParserVersion(void){return 0;}
void* getPluginRegistry(void){return 0;}
int initLibNvInferPlugins(void){return 0;}
"""

_LISTER = r"""
import ctypes, json, sys
for lib in sys.argv[2:]:
    ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
sys.path.insert(0, sys.argv[1])
import tensorrt as trt
names = set()
for name in dir(trt):
    if name.startswith("_") and name != "__version__":
        continue
    names.add(name)
    obj = getattr(trt, name)
    if isinstance(obj, type):
        names.update(f"{name}.{a}" for a in dir(obj) if not a.startswith("_"))
print(json.dumps({"version": trt.__version__, "names": sorted(names)}))
"""


def _needed_major(so_path: str) -> str:
    out = subprocess.run(["readelf", "-d", so_path], capture_output=True, text=True, check=True).stdout
    majors = set(re.findall(r"\[libnvinfer\.so\.(\d+)\]", out))
    if len(majors) != 1:
        raise SystemExit(f"cannot tell which libnvinfer {so_path} links: {sorted(majors)}")
    return majors.pop()


def extract(wheel: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="trt-api-") as tmp:
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tmp)
        pkg = os.path.join(tmp, "tensorrt_bindings")
        if not os.path.isfile(os.path.join(pkg, "tensorrt.so")):
            raise SystemExit(f"{wheel}: no tensorrt_bindings/tensorrt.so (not a TensorRT binding wheel?)")
        os.rename(pkg, os.path.join(tmp, "tensorrt"))  # the package installs as `tensorrt`
        so = os.path.join(tmp, "tensorrt", "tensorrt.so")
        major = _needed_major(so)
        stub_c = os.path.join(tmp, "stub.c")
        with open(stub_c, "w") as f:
            f.write(_STUB_C)
        libs = []
        for lib in ("nvinfer", "nvinfer_plugin", "nvonnxparser"):
            soname = f"lib{lib}.so.{major}"
            out = os.path.join(tmp, soname)
            subprocess.run(["cc", "-shared", "-fPIC", "-o", out, stub_c, f"-Wl,-soname,{soname}"], check=True)
            libs.append(out)
        proc = subprocess.run([sys.executable, "-c", _LISTER, tmp, *libs], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": ""})
        if proc.returncode != 0:
            raise SystemExit(f"importing the bindings of {wheel} failed:\n{proc.stderr[-2000:]}")
        return json.loads(proc.stdout)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    wheel, out = argv
    with open(wheel, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    api = extract(wheel)
    lines = [f"# TensorRT Python API surface (dir() of the module and of each class), version {api['version']}",
             f"# wheel: {os.path.basename(wheel)}",
             f"# sha256: {sha}",
             "# generated by tools/extract_tensorrt_api.py; checked by tests/test_tensorrt_api.py",
             *api["names"]]
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{out}: {len(api['names'])} names of TensorRT {api['version']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

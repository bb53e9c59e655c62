"""Copies libonnxruntime.so out of an `onnxruntime` wheel (PyPI's wheels carry it in
onnxruntime/capi/). Usage: ort-lib-from-wheel.py WHEEL DEST_FILE"""
import shutil
import sys
import zipfile

wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    libs = [n for n in z.namelist() if "/capi/libonnxruntime.so" in n]
    if not libs:
        sys.exit(f"{wheel} has no libonnxruntime.so")
    with z.open(libs[0]) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out)

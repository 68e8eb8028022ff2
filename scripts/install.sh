#!/usr/bin/env bash
# Install datatools with every extra the tests need into a virtual environment, in an order
# that always ends with exactly one OpenCV wheel: opencv-contrib-python-headless.
#
# Why: mmaction2 depends on opencv-contrib-python and mmcv-lite on opencv-python; all OpenCV
# wheels write the same cv2 package, so whichever pip installs last wins and removing one
# breaks the others. Only the contrib wheels have cv2.optflow (TV-L1), and the non-headless
# ones need libGL. So: install everything, remove every OpenCV wheel, reinstall the one we want.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-dev,mmaction,cluster}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip="$VENV/bin/python -m pip"
$pip install -q --upgrade pip
# torch first, pinned: its CPU wheel is what mmaction2's unpinned `torch` then finds satisfied.
# (Only for the extras that need it: the CPU docker image installs without.)
case ",$EXTRAS," in
  *,mmaction,*|*,gpu,*) $pip install -q "torch==2.13.0" ;;
esac
$pip install -q -e ".[${EXTRAS}]"
opencv_version=$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('opencv-contrib-python-headless'))")
$pip uninstall -q -y opencv-python opencv-python-headless opencv-contrib-python opencv-contrib-python-headless
$pip install -q --no-deps "opencv-contrib-python-headless==${opencv_version}"
"$VENV/bin/datatools" doctor

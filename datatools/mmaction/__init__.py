"""MMAction2 on the manifest: `datasets` (registered dataset classes that read
`manifest.parquet`), `config` (the config writer), `train` (MMEngine's Runner on a config),
`compat` (stand-ins the MMAction2 1.2.0 wheel lacks), `packed` (the `datatools_packed` file
backend: frames read from packs).

Configs name this package in `custom_imports = dict(imports=['datatools.mmaction'])`, so
importing it registers the datasets with MMAction2's registry (and the packed backend with
mmengine's), wherever MMAction2 is installed.
Without MMAction2 (the `mmaction` extra) nothing is registered and the config writer still
works: configs can be written on a machine that does not train.
"""

import importlib.util

if importlib.util.find_spec("mmaction") is not None:
    from .datasets import ManifestRawframeDataset, ManifestVideoDataset  # noqa: F401
    from .packed import PackedBackend  # noqa: F401

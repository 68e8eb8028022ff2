"""The validate step: `probe` opens and checks one video, `run` probes a data root in
parallel and records the verdicts in the manifest, `quarantine` moves bad files aside."""

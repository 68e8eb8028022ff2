"""The data root: its layout words, status words, lock, manifest, quarantine, what is on its
disk (scan), whether it changed (fingerprint), and its scanned state every step starts from."""

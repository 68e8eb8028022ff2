"""datatools: turn raw video action-recognition datasets into data MMAction2 trains on."""

__version__ = "0.1.0"

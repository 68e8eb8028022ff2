"""The build-lists step: `scan` finds videos and frame folders on disk, `build` joins them
with the annotations into the manifest and exports MMAction2's text lists from it."""

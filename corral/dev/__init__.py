"""The one-machine runtime behind `corral dev`."""

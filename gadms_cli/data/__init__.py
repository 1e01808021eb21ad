"""Data: benchmark readers, WebPerson reader, transforms, samplers and the SketchPedes generator."""

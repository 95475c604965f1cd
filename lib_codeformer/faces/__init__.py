"""Faces in photos: detection, alignment geometry, parsing and compositing, as functions on arrays.

Knows nothing about the network beyond "a 512 x 512 aligned face in, one out".
"""

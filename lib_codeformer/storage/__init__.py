"""Files: model files (where they are, verified downloads, the cache) and image files.

Imports neither torch nor the network, so front ends can use it at start-up.
"""

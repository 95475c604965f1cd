"""The CodeFormer network as the paper describes it, its weights, and running it on aligned faces.

Nothing here knows about faces in photos, files or front ends; nothing here
is tuned for one kind of processor (that is ``lib_codeformer.acceleration``).
"""

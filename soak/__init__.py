"""`make soak`: a bounded soak of the local endpoint in front of a real `mme serve`.

A random, seeded mix of loads, invokes, unloads and known-bad requests over a dozen tiny
models, with every answer checked, then a census of processes, threads, file descriptors
and memory to show that nothing leaked. ``python -m soak.run --help`` has the options.
"""

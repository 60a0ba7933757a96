"""Model-free class-wise and sample-wise synthetic poisons: regions, low frequency, random noise.

``ops`` holds the tensor code; each public module registers one family.
"""

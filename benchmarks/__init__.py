"""Ratio benchmarks and the builder of the offline pico zoo (`benchmarks.zoo`)."""

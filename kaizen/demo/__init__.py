"""The demo: a simulated service reporting to the embedded AWS endpoint and its fault scenarios."""

"""The simulated service the demo runs: its model, how it reports to AWS, how the demo steers kaizen."""

"""The demo workload: a simulated service (service.py) reporting to CloudWatch, Logs and SSM (reporter.py)."""

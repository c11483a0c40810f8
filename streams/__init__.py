"""kaizen topology: settings, the faust app, records, topics, tables, CLI and the embedded stack."""

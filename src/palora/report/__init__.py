"""What a run reports: ``report.json`` / ``report.md``, the plots, the model card."""

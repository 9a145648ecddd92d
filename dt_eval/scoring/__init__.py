"""Official-faithful scoring: per-item match rules, breakdown tables, submission files."""

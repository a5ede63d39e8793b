"""The HTMX pages: dashboard, a workload's page and its panels, a deploy's page."""

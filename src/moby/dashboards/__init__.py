"""Grafana provisioning as code: data sources, dashboards and alert rules for the MOBY data.

Built with grafana-foundation-sdk (Grafana Labs' typed builders, generated from Grafana's own
schemas); see docs/GRAFANA.md for the choice. ``moby grafana export DIR`` writes the tree.
"""

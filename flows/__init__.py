"""Prefect flows that chain the steps (edit, batch edit, deployments).

Planned in the Prefect issue; not implemented yet. Flows know URIs and specs, never tensors.
"""

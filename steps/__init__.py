"""Containerized pipeline steps (optimize, finetune, generate): JSON request in, JSON result out.

Each step reads its inputs from the artifact store, runs one stage of `imagic.stages`, writes its
outputs and logs to MLflow (`steps.entrypoint` is the shared contract). Run one as
`python -m steps.<name>`, or as `python -m steps <name>`, the step image's entry point, which
also checks the container's environment first (`steps.container`).
"""

"""Containerized pipeline steps (optimize, finetune, generate): pydantic Request -> Result.

Each step reads its inputs from the artifact store, runs one stage of `imagic.method`, writes
its outputs and logs to MLflow. Planned in the storage/MLflow issue; not implemented yet.
"""

-- Run by the postgres image on its first start (an empty data volume) only, as POSTGRES_USER:
-- MLflow's database beside Prefect's (POSTGRES_DB=prefect). MLflow creates its tables itself.
CREATE DATABASE mlflow;

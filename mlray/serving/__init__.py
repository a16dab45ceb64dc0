"""Code that runs inside Ray Serve replicas: MLflow's scoring protocol on Ray Serve.

Only the stdlib, ray, mlflow, pandas, numpy, starlette and fastapi may be imported here: a
replica's environment is ``ray[serve]`` plus the model's own requirements, nothing else.
``mlray.serving.protocol`` imports neither Ray nor MLflow, so it is unit-testable anywhere.
"""

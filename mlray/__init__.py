"""mlray: reconcile Ray Serve applications with the MLflow Model Registry.

Kept import-light on purpose: this package (just this file and ``mlray.serving``) is zipped
and shipped to every cluster with each deploy, where only Ray and the model's own
requirements are installed.
"""

__version__ = "0.1.0"

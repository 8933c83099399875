"""Django project and app for denoising review.

Importing the package builds nothing: the Celery app lives in ``radiology.celery``
(``celery -A radiology`` finds it there) and is loaded when Django starts, so the
pure DICOM core (``dicomio``) and the tools around it import without Django or Celery.
"""

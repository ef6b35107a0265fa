"""The Django project. The Celery app is loaded with it, so tasks queued from a server
process use the project's broker settings."""

from chatsite.celery import app as celery_app

__all__ = ("celery_app",)

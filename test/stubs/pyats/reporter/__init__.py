"""`from pyats.reporter import ReportClient`, as pyATS documents it."""

from .client import ReportClient

__all__ = ['ReportClient']

"""The service at a glance, as one viewer may see it: the status page's data
(`reads.overview`, typed in `views`)."""

from service.overview.reads import RECENT, overview
from service.overview.views import Overview

__all__ = ["RECENT", "Overview", "overview"]

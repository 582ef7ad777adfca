"""Static checks for NF source files (``nfos check NF.py``)."""

from nfos.check.static import Finding, check_file, check_source

__all__ = ["Finding", "check_file", "check_source"]

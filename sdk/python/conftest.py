"""pytest puts this directory on `sys.path` (the rootdir of the SDK's own tests), so the
tests import `wharf_sdk` from here without installing it."""

"""The HTTP API at /api/v1/ (issue 23): token authentication, one permission check, JSON errors."""

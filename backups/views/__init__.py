"""Views outside the admin's own pages, one module per concern: the dashboard and live progress
(dashboard), run now and verify (operations), downloads (downloads). Thin: check the permission,
call one service, present the result."""
